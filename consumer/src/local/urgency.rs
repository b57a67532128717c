//! Delay tolerance in-process (SPEC.md section 19.8): among the tasks
//! ready to start, urgent ones (no tolerance) go first, then deferrable
//! ones by earliest deadline (the time they became ready plus their
//! tolerance), then in the order they became ready. A task that starts
//! after its deadline is reported with
//! [`TaskResult::deadline_missed`](super::TaskResult::deadline_missed).

use std::time::{Duration, Instant};

/// How urgent a ready task is; smaller starts first. Ties are broken by
/// the tenants' turns and readiness order (see [`super::ready`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Urgency {
    deferrable: bool,
    deadline: Option<Instant>,
}

impl Urgency {
    /// The urgency of a task with `tolerance` that became ready at `now`.
    pub(super) fn new(tolerance: Option<Duration>, now: Instant) -> Self {
        Urgency {
            deferrable: tolerance.is_some(),
            deadline: tolerance.map(|t| now.checked_add(t).unwrap_or(now)),
        }
    }

    /// Whether a start at `now` is after the deadline.
    pub(super) fn missed(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|deadline| now > deadline)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn urgent_first_then_earliest_deadline() {
        let now = Instant::now();
        let long = Urgency::new(Some(Duration::from_secs(60)), now);
        let short = Urgency::new(Some(Duration::from_secs(1)), now);
        let urgent = Urgency::new(None, now);
        let mut keys = [(long, 0), (urgent, 1), (short, 2), (urgent, 3), (short, 4)];
        keys.sort();
        let order: Vec<usize> = keys.iter().map(|(_, n)| *n).collect();
        assert_eq!(order, [1, 3, 2, 4, 0]);
    }

    #[test]
    fn a_start_past_the_deadline_is_a_miss() {
        let now = Instant::now();
        let key = Urgency::new(Some(Duration::from_millis(10)), now);
        assert!(!key.missed(now + Duration::from_millis(10)));
        assert!(key.missed(now + Duration::from_millis(11)));
        assert!(!Urgency::new(None, now).missed(now + Duration::from_secs(3_600)));
    }
}
