//! Handing concurrency slots to lanes: directly from the worker's
//! semaphore, or through a lane group that picks which of its waiting
//! lanes gets the next slot.
//!
//! A fair queue (SPEC.md section 21) is consumed by one lane per shard plus
//! one for its plain queue, all in one [`LaneGroup`]. A lane takes a
//! delivery, then asks its group for a slot; the group's dispatcher takes
//! slots from the semaphore one at a time, only while some lane waits, and
//! gives each to the lane its [`SlotPolicy`] picks among those waiting —
//! round-robin by default, so a tenant flooding its shard gets one slot in
//! turn with every other busy shard, however deep its backlog.
//!
//! Every slot comes through the worker's urgency [`Gate`] (SPEC.md section
//! 19): a group asks it as one urgent waiter, a plain lane with its rank.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use celeriac_schema::fair::parse_shards;
use celeriac_schema::store::{ControlHash, Store};
use celeriac_schema::Topology;
use futures_util::future::Either;
use futures_util::FutureExt;
use tokio::sync::{oneshot, Notify, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::urgency::Gate;

/// Chooses which waiting lane of a group gets the next slot.
pub(crate) trait SlotPolicy: Send + 'static {
    /// The lane (an index into `waiting`) to serve; `waiting[i]` tells
    /// whether lane `i` has a job waiting, and at least one has.
    fn choose(&mut self, waiting: &[bool]) -> usize;
}

/// Serves the waiting lanes in turn.
#[derive(Debug, Default)]
pub(crate) struct RoundRobin {
    next: usize,
}

impl SlotPolicy for RoundRobin {
    fn choose(&mut self, waiting: &[bool]) -> usize {
        let n = waiting.len().max(1);
        let chosen = (0..n)
            .map(|step| (self.next + step) % n)
            .find(|&i| waiting.get(i).copied().unwrap_or(false))
            .unwrap_or(0);
        self.next = (chosen + 1) % n;
        chosen
    }
}

/// Where a lane takes its concurrency slots from.
#[derive(Clone)]
pub(super) enum Slots {
    /// Straight from the gate, with the lane's rank (0: urgent).
    Direct(Arc<Gate>, usize),
    /// Through a lane group, as lane `index`.
    Group(Arc<LaneGroup>, usize),
}

impl Slots {
    /// A slot if one is free and nobody in the lane's group waits.
    pub(super) fn try_acquire(&self) -> Option<OwnedSemaphorePermit> {
        match self {
            Slots::Direct(gate, rank) => gate.try_acquire(*rank),
            Slots::Group(group, _) => {
                let state = group.lock();
                if state
                    .waiters
                    .iter()
                    .any(|w| w.iter().any(|tx| !tx.is_closed()))
                {
                    return None;
                }
                group.gate.try_acquire(0)
            }
        }
    }

    /// Waits for a slot; `None` when the gate or the group closed. A
    /// deferrable lane's caller waits as an urgent one once it has waited
    /// its class's TTL (see [`Gate::acquire_in_turn`]).
    /// In a group, the caller takes its place in its lane's line when this
    /// is called, not when the future is first polled.
    pub(super) fn acquire(
        &self,
    ) -> impl Future<Output = Option<OwnedSemaphorePermit>> + Send + 'static {
        match self {
            Slots::Direct(gate, rank) => {
                let (gate, rank) = (gate.clone(), *rank);
                Either::Left(async move { gate.acquire_in_turn(rank).await.ok() })
            }
            Slots::Group(group, index) => {
                let (tx, rx) = oneshot::channel();
                if let Some(queue) = group.lock().waiters.get_mut(*index) {
                    queue.push_back(tx);
                }
                group.wake.notify_one();
                Either::Right(rx.map(Result::ok))
            }
        }
    }
}

/// Lanes sharing the worker's slots under one [`SlotPolicy`].
pub(super) struct LaneGroup {
    gate: Arc<Gate>,
    state: Mutex<GroupState>,
    wake: Notify,
}

struct GroupState {
    /// Per lane, its callers waiting for a slot, oldest first.
    waiters: Vec<VecDeque<oneshot::Sender<OwnedSemaphorePermit>>>,
    policy: Box<dyn SlotPolicy>,
}

impl LaneGroup {
    /// A group of `lanes` lanes taking urgent slots from `gate` until
    /// `stop`; returns one [`Slots`] per lane.
    pub(super) fn start(
        gate: Arc<Gate>,
        lanes: usize,
        policy: Box<dyn SlotPolicy>,
        stop: CancellationToken,
    ) -> Vec<Slots> {
        let group = Arc::new(LaneGroup {
            gate,
            state: Mutex::new(GroupState {
                waiters: (0..lanes).map(|_| VecDeque::new()).collect(),
                policy,
            }),
            wake: Notify::new(),
        });
        tokio::spawn(group.clone().dispatch(stop));
        (0..lanes)
            .map(|index| Slots::Group(group.clone(), index))
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, GroupState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether some lane waits, dropping callers that gave up.
    fn anyone_waiting(&self) -> bool {
        let mut state = self.lock();
        let mut any = false;
        for queue in &mut state.waiters {
            queue.retain(|tx| !tx.is_closed());
            any |= !queue.is_empty();
        }
        any
    }

    /// The oldest caller of the lane the policy picks; `None` when nobody
    /// waits.
    fn next_waiter(&self) -> Option<oneshot::Sender<OwnedSemaphorePermit>> {
        let mut state = self.lock();
        for queue in &mut state.waiters {
            queue.retain(|tx| !tx.is_closed());
        }
        let waiting: Vec<bool> = state.waiters.iter().map(|q| !q.is_empty()).collect();
        if !waiting.contains(&true) {
            return None;
        }
        let chosen = state.policy.choose(&waiting);
        match state.waiters.get_mut(chosen).and_then(VecDeque::pop_front) {
            Some(tx) => Some(tx),
            // A policy that picked an idle lane: serve the first waiting.
            None => state.waiters.iter_mut().find_map(VecDeque::pop_front),
        }
    }

    /// Takes a slot whenever some lane waits and hands it on.
    async fn dispatch(self: Arc<Self>, stop: CancellationToken) {
        loop {
            while !self.anyone_waiting() {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = self.wake.notified() => {}
                }
            }
            let permit = tokio::select! {
                _ = stop.cancelled() => return,
                permit = self.gate.acquire(0) => permit,
            };
            let Ok(mut permit) = permit else {
                warn!("the concurrency gate closed; a lane group stops");
                return;
            };
            // A caller may give up meanwhile: the slot goes to the next,
            // or back to the semaphore when nobody is left.
            while let Some(tx) = self.next_waiter() {
                match tx.send(permit) {
                    Ok(()) => break,
                    Err(back) => permit = back,
                }
            }
        }
    }
}

/// The topology with the fair queues recorded in the store's `{ns}:fair`
/// hash; counts set on the worker itself win. A store that does not
/// answer leaves the topology as it is, with a warning.
pub(super) async fn with_store_fairness(store: &dyn Store, mut topology: Topology) -> Topology {
    match store.hash_all(ControlHash::Fair).await {
        Ok(entries) => {
            for (queue, value) in entries {
                if topology.fair_shards(&queue).is_some() {
                    continue;
                }
                let applied = parse_shards(&queue, &value)
                    .and_then(|shards| topology.clone().with_fair_queue(&queue, u64::from(shards)));
                match applied {
                    Ok(next) => topology = next,
                    Err(e) => warn!(error = %e, "ignoring a fair queue setting"),
                }
            }
        }
        Err(e) => warn!(error = %e, "cannot read the fair queues from the store"),
    }
    topology
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_serves_waiting_lanes_in_turn() {
        let mut rr = RoundRobin::default();
        let all = [true, true, true];
        let picks: Vec<usize> = (0..6).map(|_| rr.choose(&all)).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        // Lane 1 idle: skipped, and the turn moves on past it.
        let some = [true, false, true];
        let picks: Vec<usize> = (0..4).map(|_| rr.choose(&some)).collect();
        assert_eq!(picks, [0, 2, 0, 2]);
    }

    #[tokio::test]
    async fn a_flooding_lane_gets_one_slot_in_turn() {
        let gate = Gate::new(Arc::new(tokio::sync::Semaphore::new(1)), 4);
        let stop = CancellationToken::new();
        let slots = LaneGroup::start(gate, 2, Box::new(RoundRobin::default()), stop.clone());
        // Lane 0 lines up five callers before lane 1 lines up two.
        let mut pending: Vec<(usize, _)> = Vec::new();
        for (lane, count) in [(0usize, 5), (1, 2)] {
            for _ in 0..count {
                pending.push((lane, Box::pin(slots[lane].acquire())));
            }
        }
        let mut order = Vec::new();
        while !pending.is_empty() {
            let futures = pending.iter_mut().map(|(_, f)| f);
            let (permit, index, _) = futures_util::future::select_all(futures).await;
            assert!(permit.is_some(), "the group handed out a closed slot");
            order.push(pending.remove(index).0);
            // The one slot comes back for the next caller.
            drop(permit);
        }
        assert_eq!(order, [0, 1, 0, 1, 0, 0, 0]);
        stop.cancel();
    }
}
