//! The ready tasks of a local run, by resource pool, and which starts
//! next: the most urgent (see [`super::urgency`]: no tolerance first, then
//! the earliest deadline), and among equally urgent ones the oldest ready,
//! except that tenants take turns.
//!
//! Each ready task gets a start tag, as in start-time fair queuing with one
//! unit per task: `max(V, the tenant's previous tag + 1)`, where `V` is the
//! tag of the task started last. Tasks start in tag order, ties in the
//! order they became ready. With one tenant (or none) that is plain
//! readiness order; with several, a tenant with 100 ready tasks and one
//! with 2 alternate until the second runs out, whoever became ready first.
//! Tasks without a tenant count as one tenant of their own.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use super::urgency::Urgency;

/// Orders ready tasks: (urgency, start tag, readiness sequence).
type Key = (Urgency, u64, u64);

/// Ready tasks by queue (0: no pool, `p + 1`: pool `p`).
pub(super) struct ReadyQueues {
    queues: Vec<BTreeSet<(Key, usize)>>,
    tenant_of: Vec<Option<Arc<str>>>,
    /// Each tenant's next start tag.
    next_tag: HashMap<Option<Arc<str>>, u64>,
    /// The start tag of the task started last.
    virtual_time: u64,
    seq: u64,
}

impl ReadyQueues {
    /// `queues` empty queues for nodes whose tenants are `tenant_of`.
    pub(super) fn new(queues: usize, tenant_of: Vec<Option<Arc<str>>>) -> Self {
        ReadyQueues {
            queues: vec![BTreeSet::new(); queues],
            tenant_of,
            next_tag: HashMap::new(),
            virtual_time: 0,
            seq: 0,
        }
    }

    /// Queues `node`, just become ready with `urgency`, in `queue`.
    pub(super) fn push(&mut self, queue: usize, node: usize, urgency: Urgency) {
        let tenant = self.tenant_of.get(node).cloned().flatten();
        let next = self.next_tag.entry(tenant).or_insert(0);
        let tag = (*next).max(self.virtual_time);
        *next = tag + 1;
        self.seq += 1;
        if let Some(q) = self.queues.get_mut(queue) {
            q.insert(((urgency, tag, self.seq), node));
        }
    }

    /// Takes the node to start next: of the queues whose first node `fits`
    /// (its pools have room), the one whose first node has the smallest
    /// key. Nodes no longer `live` (cancelled while queued) are dropped on
    /// the way. Returns the node
    /// with its urgency.
    pub(super) fn pop_next(
        &mut self,
        fits: impl Fn(usize) -> bool,
        live: impl Fn(usize) -> bool,
    ) -> Option<(usize, Urgency)> {
        let mut best: Option<(Key, usize)> = None;
        for (q, queue) in self.queues.iter_mut().enumerate() {
            while queue.first().is_some_and(|&(_, node)| !live(node)) {
                queue.pop_first();
            }
            if let Some(&(key, node)) = queue.first() {
                if fits(node) && best.is_none_or(|(k, _)| key < k) {
                    best = Some((key, q));
                }
            }
        }
        let (_, q) = best?;
        let ((urgency, tag, _), node) = self.queues.get_mut(q)?.pop_first()?;
        self.virtual_time = self.virtual_time.max(tag);
        Some((node, urgency))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn urgent() -> Urgency {
        Urgency::new(None, Instant::now())
    }

    fn pop(ready: &mut ReadyQueues) -> Option<usize> {
        ready.pop_next(|_| true, |_| true).map(|(node, _)| node)
    }

    fn tenants(names: &[Option<&str>]) -> Vec<Option<Arc<str>>> {
        names.iter().map(|n| n.map(Arc::from)).collect()
    }

    fn drain(ready: &mut ReadyQueues) -> Vec<usize> {
        std::iter::from_fn(|| pop(ready)).collect()
    }

    #[test]
    fn one_tenant_starts_in_readiness_order() {
        let mut ready = ReadyQueues::new(1, tenants(&[None, None, None]));
        for node in [2, 0, 1] {
            ready.push(0, node, urgent());
        }
        assert_eq!(drain(&mut ready), [2, 0, 1]);
    }

    #[test]
    fn tenants_take_turns_and_a_late_one_banks_no_credit() {
        // Nodes 0..6 of tenant a, 6..8 of tenant b.
        let names: Vec<Option<&str>> = (0..8)
            .map(|i| Some(if i < 6 { "a" } else { "b" }))
            .collect();
        let mut ready = ReadyQueues::new(1, tenants(&names));
        for node in 0..6 {
            ready.push(0, node, urgent());
        }
        // Two of a start before b's tasks become ready.
        assert_eq!(pop(&mut ready), Some(0));
        assert_eq!(pop(&mut ready), Some(1));
        ready.push(0, 6, urgent());
        ready.push(0, 7, urgent());
        // b starts at once, then alternates; it gets no run for the time it
        // was not ready.
        assert_eq!(drain(&mut ready), [6, 2, 7, 3, 4, 5]);
    }

    #[test]
    fn closed_queues_wait_and_dead_nodes_are_dropped() {
        let mut ready = ReadyQueues::new(2, tenants(&[None, None, None]));
        ready.push(1, 0, urgent());
        ready.push(0, 1, urgent());
        ready.push(0, 2, urgent());
        // Node 0 (queue 1) does not fit; node 1 was cancelled.
        let first = ready.pop_next(|node| node != 0, |node| node != 1);
        assert_eq!(first.map(|(node, _)| node), Some(2));
        assert!(ready.pop_next(|node| node != 0, |_| true).is_none());
        assert_eq!(pop(&mut ready), Some(0));
    }

    #[test]
    fn urgent_tasks_first_then_the_earliest_deadline_whatever_the_tenant() {
        use std::time::Duration;
        let now = Instant::now();
        let names = [Some("a"), Some("b"), Some("a"), Some("b")];
        let mut ready = ReadyQueues::new(1, tenants(&names));
        ready.push(0, 0, Urgency::new(Some(Duration::from_secs(60)), now));
        ready.push(0, 1, Urgency::new(Some(Duration::from_secs(1)), now));
        ready.push(0, 2, Urgency::new(None, now));
        ready.push(0, 3, Urgency::new(None, now));
        assert_eq!(drain(&mut ready), [2, 3, 1, 0]);
    }
}
