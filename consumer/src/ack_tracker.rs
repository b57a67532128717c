//! Batching acknowledgements.
//!
//! Handlers finish out of order, but acking every delivery on its own costs
//! the broker dearly. The tracker acks the contiguous prefix of finished
//! deliveries with one `multiple` ack, and acks a delivery that finished
//! behind a slow one on its own only once it has waited a tick, so a long
//! task never holds the others' prefetch slots for long.

use std::collections::{BTreeMap, BTreeSet};

/// Broker actions the tracker asks for, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckAction {
    /// Ack every unacked delivery up to and including this tag.
    AckUpTo(u64),
    /// Ack this one delivery.
    AckOne(u64),
}

/// Delivery tags of one channel: those handed out and not yet finished,
/// and those finished but not yet acked.
#[derive(Debug, Default)]
pub struct AckTracker {
    outstanding: BTreeSet<u64>,
    /// Finished tag -> tick at which it finished.
    finished: BTreeMap<u64, u64>,
    tick: u64,
}

impl AckTracker {
    /// A delivery was received.
    pub fn delivered(&mut self, tag: u64) {
        self.outstanding.insert(tag);
    }

    /// A delivery was settled some other way (nacked, or its channel is
    /// gone): forget it.
    pub fn forget(&mut self, tag: u64) {
        self.outstanding.remove(&tag);
        self.finished.remove(&tag);
    }

    /// A delivery's outcome is durable: it may be acked.
    pub fn finished(&mut self, tag: u64) {
        if self.outstanding.remove(&tag) {
            self.finished.insert(tag, self.tick);
        }
    }

    /// The multiple-ack for the finished prefix, if any.
    pub fn take_prefix(&mut self) -> Option<AckAction> {
        let limit = self.outstanding.first().copied().unwrap_or(u64::MAX);
        let mut highest = None;
        while let Some((&tag, _)) = self.finished.first_key_value() {
            if tag > limit {
                break;
            }
            self.finished.pop_first();
            highest = Some(tag);
        }
        highest.map(AckAction::AckUpTo)
    }

    /// Advances the clock and returns single acks for deliveries that
    /// finished before the previous tick and still wait behind a slower one.
    pub fn on_tick(&mut self) -> Vec<AckAction> {
        let mut out = Vec::new();
        if let Some(prefix) = self.take_prefix() {
            out.push(prefix);
        }
        let tick = self.tick;
        let stale: Vec<u64> = self
            .finished
            .iter()
            .filter(|(_, &at)| at < tick)
            .map(|(&tag, _)| tag)
            .collect();
        for tag in stale {
            self.finished.remove(&tag);
            out.push(AckAction::AckOne(tag));
        }
        self.tick += 1;
        out
    }

    /// Everything finished, as acks, regardless of age (at shutdown).
    pub fn drain(&mut self) -> Vec<AckAction> {
        let mut out: Vec<AckAction> = self.take_prefix().into_iter().collect();
        out.extend(
            std::mem::take(&mut self.finished)
                .into_keys()
                .map(AckAction::AckOne),
        );
        out
    }

    /// Deliveries handed out and not finished.
    pub fn in_flight(&self) -> usize {
        self.outstanding.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_completions_collapse_into_one_multiple_ack() {
        let mut t = AckTracker::default();
        for tag in 1..=5 {
            t.delivered(tag);
        }
        for tag in 1..=5 {
            t.finished(tag);
        }
        assert_eq!(t.take_prefix(), Some(AckAction::AckUpTo(5)));
        assert_eq!(t.take_prefix(), None);
        assert!(t.drain().is_empty());
    }

    #[test]
    fn a_slow_delivery_bounds_the_prefix() {
        let mut t = AckTracker::default();
        for tag in 1..=4 {
            t.delivered(tag);
        }
        t.finished(1);
        t.finished(3);
        t.finished(4);
        assert_eq!(t.take_prefix(), Some(AckAction::AckUpTo(1)));
        // 3 and 4 wait behind 2 for one tick, then go alone.
        assert_eq!(t.on_tick(), vec![]);
        assert_eq!(
            t.on_tick(),
            vec![AckAction::AckOne(3), AckAction::AckOne(4)]
        );
        t.finished(2);
        assert_eq!(t.take_prefix(), Some(AckAction::AckUpTo(2)));
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn forgotten_tags_do_not_block_the_prefix() {
        let mut t = AckTracker::default();
        t.delivered(1);
        t.delivered(2);
        t.forget(1);
        t.finished(2);
        assert_eq!(t.take_prefix(), Some(AckAction::AckUpTo(2)));
    }

    #[test]
    fn finishing_an_unknown_tag_is_ignored() {
        let mut t = AckTracker::default();
        t.finished(9);
        assert_eq!(t.take_prefix(), None);
        assert!(t.drain().is_empty());
    }

    #[test]
    fn drain_returns_prefix_then_stragglers() {
        let mut t = AckTracker::default();
        for tag in 1..=3 {
            t.delivered(tag);
        }
        t.finished(1);
        t.finished(3);
        assert_eq!(t.drain(), vec![AckAction::AckUpTo(1), AckAction::AckOne(3)]);
    }
}
