//! At the start of a run: the deadline of a deferrable task and the wait
//! threshold of its queue (SPEC.md section 19).

use celeriac_schema::events::EventKind;
use celeriac_schema::Envelope;
use tracing::warn;

use super::Job;

/// How a start compares with the task's deadline and its queue's wait
/// threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct StartCheck {
    /// From when the task became due to the start, in milliseconds.
    pub(super) waited_ms: u64,
    /// Started after its deadline, by this many milliseconds.
    pub(super) late_ms: Option<u64>,
    /// Waited longer than the queue's threshold.
    pub(super) wait_exceeded: bool,
}

/// Checks a start of `env` at `started_ms` against a wait threshold of
/// `threshold_ms`.
pub(super) fn check(env: &Envelope, started_ms: u64, threshold_ms: Option<u64>) -> StartCheck {
    StartCheck {
        waited_ms: started_ms.saturating_sub(env.due_ms()),
        late_ms: env
            .deadline_ms()
            .filter(|deadline| started_ms > *deadline)
            .map(|deadline| started_ms - deadline),
        wait_exceeded: threshold_ms
            .is_some_and(|limit| started_ms.saturating_sub(env.due_ms()) > limit),
    }
}

impl Job {
    /// Counts and logs a missed deadline or an exceeded wait, and announces
    /// the start with the wait.
    pub(super) fn started(&self, env: &Envelope, started_ms: u64) {
        let urgency = &self.shared.config.urgency;
        let threshold = urgency
            .wait_threshold(&self.queue)
            .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
        let checked = check(env, started_ms, threshold);
        let metrics = &self.shared.metrics.urgency;
        if let Some(late_ms) = checked.late_ms {
            metrics.deadline_missed(&self.queue, &env.task);
            warn!(task_id = %env.id, late_ms, tolerance_ms = ?env.tolerance_ms, "started after its deadline");
        }
        if checked.wait_exceeded {
            metrics.wait_exceeded(&self.queue);
            warn!(task_id = %env.id, waited_ms = checked.waited_ms, threshold_ms = ?threshold, "waited longer than the queue's wait threshold");
        }
        let event = self.event(EventKind::Started, env).map(|mut e| {
            e.waited_ms = Some(checked.waited_ms);
            e.wait_exceeded = checked.wait_exceeded.then_some(true);
            e
        });
        self.emit(event);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_start_is_checked_against_deadline_and_threshold() {
        let mut env = Envelope::new("t", rmpv::Value::Nil);
        env.created_at = 1_000;
        let on_time = check(&env, 1_500, Some(1_000));
        assert_eq!(on_time.waited_ms, 500);
        assert_eq!((on_time.late_ms, on_time.wait_exceeded), (None, false));
        env.tolerance_ms = Some(2_000);
        let late = check(&env, 4_000, Some(1_000));
        assert_eq!(late.late_ms, Some(1_000));
        assert!(late.wait_exceeded);
        env.eta = Some(3_500);
        let after_eta = check(&env, 4_000, None);
        assert_eq!((after_eta.waited_ms, after_eta.late_ms), (500, None));
        assert!(!after_eta.wait_exceeded);
    }
}
