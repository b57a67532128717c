//! The error a task handler returns.

use std::fmt;

/// Why a task run failed.
///
/// Any `std::error::Error` converts into it with `?` (retryable, its type
/// name as the kind); build one directly to choose the kind or to mark it
/// as not worth retrying.
///
/// # Examples
///
/// ```
/// use celeriac_consumer::TaskError;
///
/// let e = TaskError::new("Timeout", "upstream took too long");
/// assert!(e.is_retryable());
/// let e = TaskError::fatal("InvalidAddress", "no @ in address");
/// assert!(!e.is_retryable());
///
/// fn parse(s: &str) -> Result<u32, TaskError> {
///     Ok(s.parse::<u32>()?)
/// }
/// assert_eq!(parse("x").unwrap_err().kind(), "ParseIntError");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskError {
    kind: String,
    message: String,
    retryable: bool,
}

impl TaskError {
    /// A retryable error of type `kind`.
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        TaskError {
            kind: kind.into(),
            message: message.into(),
            retryable: true,
        }
    }

    /// An error that retrying cannot fix: the task is dead-lettered at once
    /// with reason `rejected`.
    pub fn fatal(kind: impl Into<String>, message: impl Into<String>) -> Self {
        TaskError {
            kind: kind.into(),
            message: message.into(),
            retryable: false,
        }
    }

    /// A request the worker does not allow (a program not on the exec
    /// allowlist): never retried, dead-lettered with reason `forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        TaskError::fatal(FORBIDDEN, message)
    }

    pub(crate) fn bad_input(message: String) -> Self {
        TaskError::fatal(BAD_INPUT, message)
    }

    /// The error type, as the dead-letter header `celeriac-error-type` shows it.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether a retry may help.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }
}

/// Error kind of an input that does not match the task's input type.
pub const BAD_INPUT: &str = "InputError";
/// Error kind of a handler that panicked.
pub const PANIC: &str = "Panic";
/// Error kind of a request the worker does not allow
/// ([`TaskError::forbidden`]).
pub const FORBIDDEN: &str = "Forbidden";
/// Error kind of a run aborted at its hard time limit.
pub const TIME_LIMIT: &str = "TimeLimitExceeded";
/// Error kind of a task whose name no handler is registered under.
pub const UNKNOWN_TASK: &str = "UnknownTask";
/// The error type of a task that names a resource pool without a capacity
/// (or asks for more units than the pool has): it is dead-lettered.
pub const UNKNOWN_POOL: &str = "UnknownPool";
/// Error kind recorded for a task discarded at its expiry (state
/// `expired`); never on a dead letter.
pub const EXPIRED: &str = "Expired";

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl<E: std::error::Error> From<E> for TaskError {
    fn from(err: E) -> Self {
        let full = std::any::type_name::<E>();
        let kind = full.rsplit("::").next().unwrap_or(full);
        TaskError::new(kind, err.to_string())
    }
}
