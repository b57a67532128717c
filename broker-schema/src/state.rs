//! The lifecycle states of a task.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where a task is in its life.
///
/// On the wire and in the store each state is its lower-case name.
///
/// # Examples
///
/// ```
/// use celeriac_schema::TaskState;
///
/// assert!(TaskState::Succeeded.is_terminal());
/// assert!(!TaskState::Retrying.is_terminal());
/// assert_eq!(TaskState::Queued.to_string(), "queued");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// Built by a producer, not yet confirmed by the broker.
    Created,
    /// Confirmed by the broker, waiting for a worker (or for its ETA).
    Queued,
    /// A worker is running it.
    Started,
    /// It failed and waits in the delay topology for its next attempt.
    Retrying,
    /// It ran to completion.
    Succeeded,
    /// It failed and will not run again (dead-lettered).
    Failed,
    /// It was never run because something it depends on failed.
    Skipped,
    /// It was cancelled by an operator or the application.
    Revoked,
    /// It reached its `expires` time before a worker could run it, and was
    /// discarded without running.
    Expired,
}

impl TaskState {
    /// Every state, in lifecycle order.
    pub const ALL: [TaskState; 9] = [
        TaskState::Created,
        TaskState::Queued,
        TaskState::Started,
        TaskState::Retrying,
        TaskState::Succeeded,
        TaskState::Failed,
        TaskState::Skipped,
        TaskState::Revoked,
        TaskState::Expired,
    ];

    /// The state of a wire name; `None` for a name this build does not
    /// know.
    ///
    /// # Examples
    ///
    /// ```
    /// use celeriac_schema::TaskState;
    ///
    /// assert_eq!(TaskState::parse("expired"), Some(TaskState::Expired));
    /// assert_eq!(TaskState::parse("Expired"), None);
    /// ```
    pub fn parse(name: &str) -> Option<TaskState> {
        TaskState::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// The wire name of the state.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Created => "created",
            TaskState::Queued => "queued",
            TaskState::Started => "started",
            TaskState::Retrying => "retrying",
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
            TaskState::Skipped => "skipped",
            TaskState::Revoked => "revoked",
            TaskState::Expired => "expired",
        }
    }

    /// Whether no further transition can follow.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Succeeded
                | TaskState::Failed
                | TaskState::Skipped
                | TaskState::Revoked
                | TaskState::Expired
        )
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
