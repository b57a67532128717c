//! What a run reports while it goes: one event per change of a task's
//! state, for progress displays.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use crate::task_error::TaskError;

/// A change in one task's state during a [`LocalScheduler`] run.
///
/// Events of one task arrive in order: `Started` (once per attempt),
/// `Retrying` between attempts, then one of `Succeeded`, `Failed` or
/// `Skipped` (a skipped task has no other event).
///
/// [`LocalScheduler`]: crate::LocalScheduler
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LocalEvent {
    /// The task's id.
    pub task: Arc<str>,
    /// When it happened.
    pub at: Instant,
    /// What happened.
    pub kind: LocalEventKind,
}

/// What happened to a task.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum LocalEventKind {
    /// An attempt started (1 for the first).
    Started {
        /// The attempt.
        attempt: u32,
    },
    /// An attempt failed and the task will run again.
    Retrying {
        /// The attempt that failed.
        attempt: u32,
        /// Its error.
        error: TaskError,
    },
    /// An attempt returned a result.
    Succeeded {
        /// Attempts made.
        attempts: u32,
    },
    /// The last attempt failed.
    Failed {
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        error: TaskError,
    },
    /// The task will not run: a dependency failed or it was cancelled.
    Skipped {
        /// Why ([`DEPENDENCY_FAILED`](crate::local::DEPENDENCY_FAILED) or
        /// [`CANCELLED`](crate::local::CANCELLED)).
        error: TaskError,
    },
}

impl LocalEventKind {
    /// A short lowercase name: `started`, `retrying`, `succeeded`,
    /// `failed` or `skipped`.
    pub fn name(&self) -> &'static str {
        match self {
            LocalEventKind::Started { .. } => "started",
            LocalEventKind::Retrying { .. } => "retrying",
            LocalEventKind::Succeeded { .. } => "succeeded",
            LocalEventKind::Failed { .. } => "failed",
            LocalEventKind::Skipped { .. } => "skipped",
        }
    }
}

/// Where a run sends its events, when someone listens.
#[derive(Debug, Clone, Default)]
pub(crate) struct Events(Option<mpsc::UnboundedSender<LocalEvent>>);

impl Events {
    pub(crate) fn new(sender: mpsc::UnboundedSender<LocalEvent>) -> Self {
        Events(Some(sender))
    }

    pub(crate) fn emit(&self, task: &Arc<str>, kind: impl FnOnce() -> LocalEventKind) {
        if let Some(sender) = &self.0 {
            // A listener that went away just stops listening.
            let _ = sender.send(LocalEvent {
                task: task.clone(),
                at: Instant::now(),
                kind: kind(),
            });
        }
    }
}
