//! What a run reports for each task.

use std::fmt;

use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::task_error::TaskError;

/// Error kind of a task skipped because a task it depends on, directly or
/// transitively, failed.
pub const DEPENDENCY_FAILED: &str = "DependencyFailed";
/// Error kind of a task cancelled before it started, or one that noticed its
/// cancellation and stopped.
pub const CANCELLED: &str = "Cancelled";

/// How a task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    /// An attempt returned a result.
    Success,
    /// Every attempt failed (or the failure was not retryable).
    Failed,
    /// The task never ran: a dependency did not succeed, or it was
    /// cancelled first.
    Skipped,
}

impl TaskStatus {
    /// The status as it is written out: `success`, `failed` or `skipped`.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Success => "success",
            TaskStatus::Failed => "failed",
            TaskStatus::Skipped => "skipped",
        }
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of one task of a run.
///
/// | status    | `result` | `error`                                  | `attempts`      |
/// |-----------|----------|------------------------------------------|-----------------|
/// | `success` | `Some`   | `None`                                   | 1 + failures    |
/// | `failed`  | `None`   | the last attempt's error                 | up to retries+1 |
/// | `skipped` | `None`   | [`DEPENDENCY_FAILED`] or [`CANCELLED`]   | 0               |
///
/// Serializes as `{"status", "result", "error": {"kind", "message"},
/// "attempts"}`, plus `"deadline_missed": true` for a task that started
/// after its deadline.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TaskResult {
    /// How it ended.
    pub status: TaskStatus,
    /// The value the task returned.
    pub result: Option<Value>,
    /// Why it failed or was skipped.
    pub error: Option<TaskError>,
    /// How many times it was started.
    pub attempts: u32,
    /// It had a delay tolerance and started after its deadline (SPEC.md
    /// section 19.8).
    pub deadline_missed: bool,
}

impl TaskResult {
    pub(crate) fn success(result: Value, attempts: u32) -> Self {
        TaskResult {
            status: TaskStatus::Success,
            result: Some(result),
            error: None,
            attempts,
            deadline_missed: false,
        }
    }

    pub(crate) fn failed(error: TaskError, attempts: u32) -> Self {
        TaskResult {
            status: TaskStatus::Failed,
            result: None,
            error: Some(error),
            attempts,
            deadline_missed: false,
        }
    }

    pub(crate) fn skipped(error: TaskError) -> Self {
        TaskResult {
            status: TaskStatus::Skipped,
            result: None,
            error: Some(error),
            attempts: 0,
            deadline_missed: false,
        }
    }

    /// Whether the task succeeded.
    pub fn is_success(&self) -> bool {
        self.status == TaskStatus::Success
    }
}

impl Serialize for TaskResult {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Error<'a>(&'a TaskError);
        impl Serialize for Error<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut s = serializer.serialize_struct("TaskError", 2)?;
                s.serialize_field("kind", self.0.kind())?;
                s.serialize_field("message", self.0.message())?;
                s.end()
            }
        }
        let mut s = serializer.serialize_struct("TaskResult", 4)?;
        s.serialize_field("status", &self.status)?;
        s.serialize_field("result", &self.result)?;
        s.serialize_field("error", &self.error.as_ref().map(Error))?;
        s.serialize_field("attempts", &self.attempts)?;
        if self.deadline_missed {
            s.serialize_field("deadline_missed", &true)?;
        }
        s.end()
    }
}
