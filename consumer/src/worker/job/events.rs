//! The task events a job announces (SPEC.md section 17), handed to the
//! worker's event sink without waiting.

use celeriac_schema::events::{EventKind, TaskEvent};
use celeriac_schema::{Envelope, TaskId};

use super::Job;
use crate::disposition::{Disposition, Outcome};

impl Job {
    /// An event of `kind` about the delivery of `env`, with this worker,
    /// queue, attempt and key; `None` when events are off, so callers
    /// build nothing then.
    pub(in crate::worker) fn event(&self, kind: EventKind, env: &Envelope) -> Option<TaskEvent> {
        self.shared.events.as_ref()?;
        let mut event = TaskEvent::new(kind, env.id, env.task.clone(), &*self.queue, env.attempt);
        event.worker = Some(self.shared.config.worker_id.to_string());
        event.key = env.effective_idempotency_key();
        Some(event)
    }

    /// Publishes `event` (from [`Job::event`]) at most once; never waits
    /// and never fails the task.
    pub(in crate::worker) fn emit(&self, event: Option<TaskEvent>) {
        if let (Some(sink), Some(event)) = (&self.shared.events, event) {
            sink.emit(event);
        }
    }

    /// Announces a task dropped without running: `revoked` with `reason`
    /// (`purged` for a purged queue).
    pub(in crate::worker) fn emit_revoked(&self, env: &Envelope, reason: &str) {
        let event = self.event(EventKind::Revoked, env).map(|mut e| {
            e.reason = Some(reason.to_owned());
            e
        });
        self.emit(event);
    }

    /// The steps after a success, repeated for a suppressed duplicate so a
    /// crash between them never stalls what comes next: the `succeeded`
    /// event, naming the run that succeeded with the key.
    pub(super) fn follow_up(&self, env: &Envelope, succeeded_as: TaskId, runtime_ms: Option<u64>) {
        let event = self.event(EventKind::Succeeded, env).map(|mut e| {
            e.succeeded_as = Some(succeeded_as);
            e.runtime_ms = runtime_ms;
            e
        });
        self.emit(event);
    }

    /// The events of a settled delivery other than success: `failed` for
    /// a run that ended in an error, then `retried` or `dead-lettered`;
    /// `expired` for an expired task.
    pub(super) fn emit_settled(
        &self,
        env: &Envelope,
        outcome: &Outcome,
        disposition: &Disposition,
        runtime_ms: Option<u64>,
    ) {
        if self.shared.events.is_none() {
            return;
        }
        let error = failure(outcome, disposition);
        let with_error = |kind| {
            self.event(kind, env).map(|mut e| {
                if let Some((error_type, message)) = &error {
                    e.error_type = Some(error_type.clone());
                    e.error = Some(message.clone());
                }
                e
            })
        };
        if matches!(
            outcome,
            Outcome::Failed(_) | Outcome::Panicked(_) | Outcome::TimedOut(_)
        ) {
            self.emit(with_error(EventKind::Failed).map(|mut e| {
                e.runtime_ms = runtime_ms;
                e
            }));
        }
        match (outcome, disposition) {
            (_, Disposition::Retry { delay, .. }) => {
                self.emit(with_error(EventKind::Retried).map(|mut e| {
                    e.delay_ms = Some(delay.as_millis() as u64);
                    e
                }));
            }
            (_, Disposition::DeadLetter { reason, .. }) => {
                self.emit(with_error(EventKind::DeadLettered).map(|mut e| {
                    e.reason = Some(reason.as_str().to_owned());
                    e
                }));
            }
            (Outcome::Expired, _) => self.emit(self.event(EventKind::Expired, env)),
            _ => {}
        }
    }
}

/// The error kind and message of a failed run or a dead letter.
fn failure(outcome: &Outcome, disposition: &Disposition) -> Option<(String, String)> {
    Some(match (outcome, disposition) {
        (Outcome::Failed(err), _) => (err.kind().to_owned(), err.message().to_owned()),
        (Outcome::Panicked(message), _) => (crate::PANIC.to_owned(), message.clone()),
        (Outcome::TimedOut(limit), _) => (
            crate::TIME_LIMIT.to_owned(),
            format!("aborted at the hard time limit of {limit:?}"),
        ),
        (
            _,
            Disposition::DeadLetter {
                error_type,
                message,
                ..
            },
        ) => (error_type.clone(), message.clone()),
        _ => return None,
    })
}
