//! Delay tolerance in-process (SPEC.md section 19.8): among the tasks
//! ready to start, urgent ones (no tolerance) go first, then deferrable
//! ones by earliest deadline (the time they became ready plus their
//! tolerance), then in the order they became ready. A task that starts
//! after its deadline is reported with
//! [`TaskResult::deadline_missed`](super::TaskResult::deadline_missed).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Where a ready task stands in its ready queue; smaller starts first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct ReadyKey {
    deferrable: bool,
    deadline: Option<Instant>,
    seq: u64,
}

impl ReadyKey {
    /// The key of a task with `tolerance` that became ready at `now`, the
    /// `seq`-th to become ready.
    pub(super) fn new(tolerance: Option<Duration>, seq: u64, now: Instant) -> Self {
        ReadyKey {
            deferrable: tolerance.is_some(),
            deadline: tolerance.map(|t| now.checked_add(t).unwrap_or(now)),
            seq,
        }
    }

    /// Whether a start at `now` is after the deadline.
    pub(super) fn missed(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|deadline| now > deadline)
    }
}

/// Inserts `node` into `queue`, kept sorted by key.
pub(super) fn insert(queue: &mut VecDeque<(ReadyKey, usize)>, key: ReadyKey, node: usize) {
    let at = queue.partition_point(|(k, _)| *k <= key);
    queue.insert(at, (key, node));
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn urgent_first_then_earliest_deadline_then_readiness() {
        let now = Instant::now();
        let mut queue = VecDeque::new();
        let long = Some(Duration::from_secs(60));
        let short = Some(Duration::from_secs(1));
        insert(&mut queue, ReadyKey::new(long, 0, now), 0);
        insert(&mut queue, ReadyKey::new(None, 1, now), 1);
        insert(&mut queue, ReadyKey::new(short, 2, now), 2);
        insert(&mut queue, ReadyKey::new(None, 3, now), 3);
        insert(&mut queue, ReadyKey::new(short, 4, now), 4);
        let order: Vec<usize> = queue.iter().map(|(_, n)| *n).collect();
        assert_eq!(order, [1, 3, 2, 4, 0]);
    }

    #[test]
    fn a_start_past_the_deadline_is_a_miss() {
        let now = Instant::now();
        let key = ReadyKey::new(Some(Duration::from_millis(10)), 0, now);
        assert!(!key.missed(now + Duration::from_millis(10)));
        assert!(key.missed(now + Duration::from_millis(11)));
        assert!(!ReadyKey::new(None, 0, now).missed(now + Duration::from_secs(3_600)));
    }
}
