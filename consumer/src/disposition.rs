//! What the broker is told once a delivery has been handled: a pure function
//! from the run's outcome to one broker action, tested without a broker.

use std::time::Duration;

use celeriac_schema::{DeadLetterReason, Envelope};

use crate::task_error::{TaskError, FORBIDDEN, PANIC, TIME_LIMIT, UNKNOWN_TASK};

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
    /// The task, its workflow or its idempotency key was revoked: it did
    /// not run, or its run was stopped (the reason given).
    Revoked(String),
    /// The task arrived before its ETA (clock skew or a rounding of the
    /// delay) and did not run yet.
    Early(Duration),
    /// No handler is registered for the task name.
    UnknownTask,
    /// The body is not a valid envelope.
    Malformed {
        /// The decode error's kind (`TooLarge`, `TooDeep`, `Malformed`,
        /// `UnsupportedVersion` or `Field`, SPEC.md section 3), the dead
        /// letter's `celeriac-error-type`.
        kind: &'static str,
        /// What was wrong, naming the field or the byte offset.
        message: String,
    },
    /// The worker requires signatures and the message's does not verify;
    /// it was not decoded.
    BadSignature(String),
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

/// The error type of a message dead-lettered for its signature.
pub const SIGNATURE_ERROR: &str = "SignatureError";

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
        (Outcome::Succeeded | Outcome::Expired | Outcome::Revoked(_), _) => Disposition::Ack,
        (Outcome::Early(delay), Some(_)) => Disposition::Delay { delay: *delay },
        (Outcome::UnknownTask, _) => dead_letter(
            DeadLetterReason::UnknownTask,
            UNKNOWN_TASK,
            match envelope {
                Some(env) => format!("no handler is registered for task {:?}", env.task),
                None => "no handler is registered for the task".to_owned(),
            },
        ),
        (Outcome::Malformed { kind, message }, _) => {
            dead_letter(DeadLetterReason::Malformed, kind, message.clone())
        }
        (Outcome::BadSignature(message), _) => dead_letter(
            DeadLetterReason::BadSignature,
            SIGNATURE_ERROR,
            message.clone(),
        ),
        (Outcome::Failed(err), Some(env)) => {
            if err.is_retryable() {
                retry_or_exhausted(env, err.kind(), err.message(), random)
            } else {
                let reason = if err.kind() == FORBIDDEN {
                    DeadLetterReason::Forbidden
                } else {
                    DeadLetterReason::Rejected
                };
                dead_letter(reason, err.kind(), err.message().to_owned())
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
            "Malformed",
            "early delivery without an envelope".to_owned(),
        ),
        // A handler never runs without an envelope; should one of these
        // reach here, the body keeps the one error type of a body that
        // did not decode (SPEC.md section 6.1 is a closed list).
        (Outcome::Failed(_) | Outcome::Panicked(_) | Outcome::TimedOut(_), None) => dead_letter(
            DeadLetterReason::Malformed,
            "Malformed",
            "an outcome without an envelope".to_owned(),
        ),
    }
}

/// What a workflow node's outcome means for the nodes that depend on it:
/// `Some(true)` releases them, `Some(false)` skips them (and fails the
/// workflow), `None` decides nothing yet (a retry or a delay is coming).
///
/// A node that ends without succeeding for any reason (dead-lettered,
/// revoked, expired) skips its dependents, so its workflow always ends.
///
/// # Examples
///
/// ```
/// use celeriac_consumer::disposition::{workflow_step, Disposition, Outcome};
///
/// assert_eq!(workflow_step(&Outcome::Succeeded, &Disposition::Ack), Some(true));
/// assert_eq!(workflow_step(&Outcome::Expired, &Disposition::Ack), Some(false));
/// ```
pub fn workflow_step(outcome: &Outcome, disposition: &Disposition) -> Option<bool> {
    match (outcome, disposition) {
        (Outcome::Succeeded, _) => Some(true),
        (Outcome::Revoked(_) | Outcome::Expired, _) => Some(false),
        (_, Disposition::DeadLetter { .. }) => Some(false),
        _ => None,
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
            format!("{message} (after {} attempts)", u64::from(env.attempt) + 1),
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

#[cfg(test)]
mod tests {
    use super::*;
    use celeriac_schema::{Backoff, RetryPolicy};

    fn envelope(attempt: u32, max_retries: u32) -> Envelope {
        let mut env = Envelope::new("t", rmpv::Value::Nil);
        env.attempt = attempt;
        env.retry = RetryPolicy {
            max_retries,
            backoff: Backoff {
                initial_ms: 1000,
                multiplier: 2.0,
                max_ms: 60_000,
                jitter: 0.5,
            },
        };
        env
    }

    fn reason(d: &Disposition) -> Option<DeadLetterReason> {
        match d {
            Disposition::DeadLetter { reason, .. } => Some(*reason),
            _ => None,
        }
    }

    #[test]
    fn success_and_expiry_ack() {
        let env = envelope(0, 3);
        assert_eq!(
            decide(&Outcome::Succeeded, Some(&env), 0.3),
            Disposition::Ack
        );
        assert_eq!(decide(&Outcome::Expired, Some(&env), 0.3), Disposition::Ack);
    }

    #[test]
    fn retryable_failures_retry_inside_the_backoff_window() {
        let env = envelope(2, 3);
        let failures = [
            Outcome::Failed(TaskError::new("Io", "reset")),
            Outcome::Panicked("boom".into()),
            Outcome::TimedOut(Duration::from_secs(1)),
        ];
        for outcome in failures {
            for random in [0.0, 0.5, 0.999] {
                match decide(&outcome, Some(&env), random) {
                    Disposition::Retry { attempt, delay } => {
                        assert_eq!(attempt, 3);
                        let (low, high) = env.retry.backoff.window(2);
                        assert!(
                            delay >= low && delay <= high,
                            "{delay:?} outside {low:?}..{high:?}"
                        );
                    }
                    other => panic!("{outcome:?} gave {other:?}"),
                }
            }
        }
    }

    #[test]
    fn the_last_allowed_attempt_is_dead_lettered_as_exhausted() {
        let env = envelope(3, 3);
        let d = decide(
            &Outcome::Failed(TaskError::new("Io", "reset")),
            Some(&env),
            0.5,
        );
        assert_eq!(reason(&d), Some(DeadLetterReason::RetriesExhausted));
        match d {
            Disposition::DeadLetter {
                error_type,
                message,
                ..
            } => {
                assert_eq!(error_type, "Io");
                assert!(message.contains("reset") && message.contains("after 4 attempts"));
            }
            other => panic!("{other:?}"),
        }
        let d = decide(&Outcome::Panicked("boom".into()), Some(&env), 0.5);
        assert!(matches!(d, Disposition::DeadLetter { ref error_type, .. } if error_type == PANIC));
        let d = decide(&Outcome::TimedOut(Duration::from_secs(2)), Some(&env), 0.5);
        assert!(
            matches!(d, Disposition::DeadLetter { ref error_type, .. } if error_type == TIME_LIMIT)
        );
    }

    #[test]
    fn zero_retries_dead_letters_the_first_failure() {
        let env = envelope(0, 0);
        let d = decide(&Outcome::Failed(TaskError::new("Io", "x")), Some(&env), 0.5);
        assert_eq!(reason(&d), Some(DeadLetterReason::RetriesExhausted));
    }

    #[test]
    fn fatal_errors_are_rejected_without_retry() {
        let env = envelope(0, 5);
        let d = decide(
            &Outcome::Failed(TaskError::fatal("Bad", "no")),
            Some(&env),
            0.5,
        );
        assert_eq!(reason(&d), Some(DeadLetterReason::Rejected));
        let d = decide(
            &Outcome::Failed(TaskError::forbidden("rm is not allowed")),
            Some(&env),
            0.5,
        );
        assert_eq!(reason(&d), Some(DeadLetterReason::Forbidden));
    }

    #[test]
    fn unknown_and_malformed_are_dead_lettered_at_once() {
        let env = envelope(0, 5);
        let d = decide(&Outcome::UnknownTask, Some(&env), 0.5);
        assert_eq!(reason(&d), Some(DeadLetterReason::UnknownTask));
        let d = decide(&Outcome::UnknownTask, Some(&env), 0.5);
        assert!(
            matches!(d, Disposition::DeadLetter { ref error_type, .. } if error_type == UNKNOWN_TASK)
        );
        for kind in [
            "TooLarge",
            "TooDeep",
            "Malformed",
            "UnsupportedVersion",
            "Field",
        ] {
            let d = decide(
                &Outcome::Malformed {
                    kind,
                    message: "field `task`: missing".into(),
                },
                None,
                0.5,
            );
            assert_eq!(reason(&d), Some(DeadLetterReason::Malformed));
            match d {
                Disposition::DeadLetter {
                    error_type,
                    message,
                    ..
                } => {
                    assert_eq!(error_type, kind, "the decode error's own kind");
                    assert!(message.contains("`task`"));
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn bad_signatures_are_dead_lettered_at_once() {
        let d = decide(
            &Outcome::BadSignature("the message carries no signature".into()),
            None,
            0.5,
        );
        match d {
            Disposition::DeadLetter {
                reason,
                error_type,
                message,
            } => {
                assert_eq!(reason, DeadLetterReason::BadSignature);
                assert_eq!(error_type, SIGNATURE_ERROR);
                assert!(message.contains("no signature"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn early_deliveries_wait_again() {
        let env = envelope(1, 5);
        let wait = Duration::from_millis(1500);
        assert_eq!(
            decide(&Outcome::Early(wait), Some(&env), 0.5),
            Disposition::Delay { delay: wait }
        );
    }

    #[test]
    fn a_node_that_ends_without_succeeding_skips_its_dependents() {
        let env = envelope(0, 3);
        let failed = Outcome::Failed(TaskError::new("Io", "reset"));
        let retry = decide(&failed, Some(&env), 0.5);
        assert_eq!(
            workflow_step(&failed, &retry),
            None,
            "a retry decides nothing"
        );
        let early = Outcome::Early(Duration::from_secs(1));
        let delay = decide(&early, Some(&env), 0.5);
        assert_eq!(workflow_step(&early, &delay), None, "nor does a delay");
        let last = envelope(3, 3);
        let exhausted = decide(&failed, Some(&last), 0.5);
        assert_eq!(workflow_step(&failed, &exhausted), Some(false));
        for ended in [Outcome::Expired, Outcome::Revoked("revoked".into())] {
            let d = decide(&ended, Some(&env), 0.5);
            assert_eq!(workflow_step(&ended, &d), Some(false), "{ended:?}");
        }
        assert_eq!(
            workflow_step(&Outcome::Succeeded, &Disposition::Ack),
            Some(true)
        );
    }

    #[test]
    fn without_an_envelope_nothing_is_retried() {
        let outcomes = [
            Outcome::Failed(TaskError::new("Io", "x")),
            Outcome::Panicked("p".into()),
            Outcome::TimedOut(Duration::from_secs(1)),
            Outcome::Early(Duration::from_secs(1)),
            Outcome::UnknownTask,
        ];
        for outcome in outcomes {
            let d = decide(&outcome, None, 0.5);
            assert!(
                matches!(d, Disposition::DeadLetter { .. }),
                "{outcome:?} without an envelope gave {d:?}"
            );
        }
        assert_eq!(decide(&Outcome::Succeeded, None, 0.5), Disposition::Ack);
    }
}
