//! AMQP header names and dead-letter reasons.
//!
//! Our headers carry no `x-` prefix: `x-` names belong to the broker, and
//! RabbitMQ 4 ignores a client-set `x-death`.

use std::fmt;
use std::str::FromStr;

/// Task name (also in the AMQP `type` property).
pub const TASK: &str = "celeriac-task";
/// Attempt number, 0 for the first run (a long integer).
pub const ATTEMPT: &str = "celeriac-attempt";
/// The task's idempotency key.
pub const IDEMPOTENCY_KEY: &str = "celeriac-idempotency-key";
/// Workflow id, when the task belongs to a workflow.
pub const WORKFLOW_ID: &str = "celeriac-workflow-id";
/// Group id, when the task belongs to a group.
pub const GROUP_ID: &str = "celeriac-group-id";
/// Chord id, when the task belongs to a chord.
pub const CHORD_ID: &str = "celeriac-chord-id";
/// The logical work queue a delayed message returns to.
pub const QUEUE: &str = "celeriac-queue";
/// Why a message was dead-lettered (a [`DeadLetterReason`]).
pub const REASON: &str = "celeriac-reason";
/// The type (kind) of the error that failed the task.
pub const ERROR_TYPE: &str = "celeriac-error-type";
/// The error message that failed the task (truncated to 4 KiB).
pub const ERROR_MESSAGE: &str = "celeriac-error-message";
/// When the task was dead-lettered, Unix milliseconds (a long integer).
pub const FAILED_AT: &str = "celeriac-failed-at";
/// Identity of the worker that dead-lettered the task.
pub const WORKER: &str = "celeriac-worker";
/// How many times the task ran before it was dead-lettered (a long integer).
pub const ATTEMPTS: &str = "celeriac-attempts";
/// Set on a copy parked while a long task runs past the consumer timeout.
pub const LEASE: &str = "celeriac-lease";
/// Set on a copy a worker sent back through the delay cascade because a
/// rate limit or a resource pool did not let it start: `rate` or `pool`.
/// The copy is the same task, same attempt: not a retry.
pub const THROTTLED: &str = "celeriac-throttled";

/// Longest error message copied into a header, in bytes.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 4096;

/// Why a message ended in a dead-letter queue.
///
/// # Examples
///
/// ```
/// use celeriac_schema::DeadLetterReason;
///
/// let reason: DeadLetterReason = "unknown-task".parse().unwrap();
/// assert_eq!(reason, DeadLetterReason::UnknownTask);
/// assert_eq!(reason.as_str(), "unknown-task");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeadLetterReason {
    /// The task failed on every attempt its retry policy allowed.
    RetriesExhausted,
    /// The handler failed with an error marked as not worth retrying.
    Rejected,
    /// No handler is registered for the task name.
    UnknownTask,
    /// The body could not be decoded as an envelope.
    Malformed,
    /// The broker's delivery limit was reached (the task crashed workers).
    DeliveryLimit,
    /// The task asked for something the worker does not allow (an exec task
    /// naming a program that is not on the worker's allowlist).
    Forbidden,
    /// The worker requires signed messages and this one is unsigned, or
    /// its signature does not verify (a changed body or signed header, an
    /// unknown key id, a malformed signature header).
    BadSignature,
}

impl DeadLetterReason {
    /// Every reason.
    pub const ALL: [DeadLetterReason; 7] = [
        DeadLetterReason::RetriesExhausted,
        DeadLetterReason::Rejected,
        DeadLetterReason::UnknownTask,
        DeadLetterReason::Malformed,
        DeadLetterReason::DeliveryLimit,
        DeadLetterReason::Forbidden,
        DeadLetterReason::BadSignature,
    ];

    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::RetriesExhausted => "retries-exhausted",
            DeadLetterReason::Rejected => "rejected",
            DeadLetterReason::UnknownTask => "unknown-task",
            DeadLetterReason::Malformed => "malformed",
            DeadLetterReason::DeliveryLimit => "delivery-limit",
            DeadLetterReason::Forbidden => "forbidden",
            DeadLetterReason::BadSignature => "bad-signature",
        }
    }
}

impl fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A header value that is not a known [`DeadLetterReason`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownReason(pub String);

impl fmt::Display for UnknownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown dead-letter reason {:?}", self.0)
    }
}

impl std::error::Error for UnknownReason {}

impl FromStr for DeadLetterReason {
    type Err = UnknownReason;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DeadLetterReason::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownReason(s.to_owned()))
    }
}

/// Cuts an error message to at most [`MAX_ERROR_MESSAGE_BYTES`] bytes on a
/// character boundary.
///
/// # Examples
///
/// ```
/// let long = "é".repeat(5000);
/// let cut = celeriac_schema::headers::truncate_error_message(&long);
/// assert!(cut.len() <= celeriac_schema::headers::MAX_ERROR_MESSAGE_BYTES);
/// ```
pub fn truncate_error_message(message: &str) -> &str {
    if message.len() <= MAX_ERROR_MESSAGE_BYTES {
        return message;
    }
    let mut end = MAX_ERROR_MESSAGE_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}
