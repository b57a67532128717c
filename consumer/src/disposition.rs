//! What the broker is told once a delivery has been handled: a pure function
//! from the run's outcome to one broker action, tested without a broker.

use std::time::Duration;

use celeriac_schema::{DeadLetterReason, Envelope};

use crate::task_error::{TaskError, PANIC, TIME_LIMIT};

/// How handling a delivery ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The handler returned a value.
    Succeeded,
    /// The handler returned an error.
    Failed(TaskError),
    /// The handler panicked.
    Panicked(String),
    /// The handler ran past its hard time limit and was aborted.
    TimedOut(Duration),
    /// The task was past its expiry and did not run.
    Expired,
    /// The task arrived before its ETA (clock skew or a rounding of the
    /// delay) and did not run yet.
    Early(Duration),
    /// No handler is registered for the task name.
    UnknownTask,
    /// The body is not a valid envelope.
    Malformed(String),
}

/// The single broker action for an outcome.
#[derive(Debug, Clone, PartialEq)]
pub enum Disposition {
    /// Acknowledge: the task is done (or deliberately dropped, when expired).
    Ack,
    /// Publish the task again with `attempt` through the delay cascade after
    /// `delay`, then acknowledge the delivery.
    Retry {
        /// The attempt number of the next run.
        attempt: u32,
        /// How long it waits first.
        delay: Duration,
    },
    /// Publish the same task, same attempt, to wait `delay` more, then
    /// acknowledge.
    Delay {
        /// How long it waits.
        delay: Duration,
    },
    /// Publish the original body to the dead-letter exchange with failure
    /// headers, then acknowledge.
    DeadLetter {
        /// Why.
        reason: DeadLetterReason,
        /// Error type header.
        error_type: String,
        /// Error message header.
        message: String,
    },
}

/// Decides the broker action for `outcome`.
///
/// `envelope` is `None` when the body could not be decoded. `random` in
/// `[0, 1)` picks the retry delay inside the backoff window.
///
/// # Examples
///
/// ```
/// use celeriac_consumer::disposition::{decide, Disposition, Outcome};
/// use celeriac_consumer::TaskError;
/// use celeriac_schema::Envelope;
///
/// let env = Envelope::new("ping", rmpv::Value::Nil);
/// assert_eq!(decide(&Outcome::Succeeded, Some(&env), 0.5), Disposition::Ack);
/// let failed = Outcome::Failed(TaskError::new("Io", "reset"));
/// assert!(matches!(decide(&failed, Some(&env), 0.5), Disposition::Retry { attempt: 1, .. }));
/// ```
pub fn decide(outcome: &Outcome, envelope: Option<&Envelope>, random: f64) -> Disposition {
    match (outcome, envelope) {
        (Outcome::Succeeded | Outcome::Expired, _) => Disposition::Ack,
        (Outcome::Early(delay), Some(_)) => Disposition::Delay { delay: *delay },
        (Outcome::UnknownTask, _) => dead_letter(
            DeadLetterReason::UnknownTask,
            "UnknownTask",
            match envelope {
                Some(env) => format!("no handler is registered for task {:?}", env.task),
                None => "no handler is registered for the task".to_owned(),
            },
        ),
        (Outcome::Malformed(message), _) => {
            dead_letter(DeadLetterReason::Malformed, "DecodeError", message.clone())
        }
        (Outcome::Failed(err), Some(env)) => {
            if err.is_retryable() {
                retry_or_exhausted(env, err.kind(), err.message(), random)
            } else {
                dead_letter(DeadLetterReason::Rejected, err.kind(), err.message().to_owned())
            }
        }
        (Outcome::Panicked(message), Some(env)) => retry_or_exhausted(env, PANIC, message, random),
        (Outcome::TimedOut(limit), Some(env)) => retry_or_exhausted(
            env,
            TIME_LIMIT,
            &format!("aborted at the hard time limit of {limit:?}"),
            random,
        ),
        // Without an envelope there is nothing to retry: keep the body.
        (Outcome::Early(_), None) => dead_letter(
            DeadLetterReason::Malformed,
            "DecodeError",
            "early delivery without an envelope".to_owned(),
        ),
        (Outcome::Failed(err), None) => {
            dead_letter(DeadLetterReason::Malformed, err.kind(), err.message().to_owned())
        }
        (Outcome::Panicked(message), None) => {
            dead_letter(DeadLetterReason::Malformed, PANIC, message.clone())
        }
        (Outcome::TimedOut(limit), None) => dead_letter(
            DeadLetterReason::Malformed,
            TIME_LIMIT,
            format!("aborted at the hard time limit of {limit:?}"),
        ),
    }
}

fn retry_or_exhausted(env: &Envelope, kind: &str, message: &str, random: f64) -> Disposition {
    if env.retry.allows_retry_after(env.attempt) {
        Disposition::Retry {
            attempt: env.attempt + 1,
            delay: env.retry.backoff.delay(env.attempt, random),
        }
    } else {
        dead_letter(
            DeadLetterReason::RetriesExhausted,
            kind,
            format!(
                "{message} (after {} attempts)",
                u64::from(env.attempt) + 1
            ),
        )
    }
}

fn dead_letter(reason: DeadLetterReason, kind: &str, message: String) -> Disposition {
    Disposition::DeadLetter {
        reason,
        error_type: kind.to_owned(),
        message,
    }
}
