//! Urgent work first: the concurrency slots shared by a queue's urgent
//! lane and its tolerance class lanes (SPEC.md section 19).
//!
//! Every lane asks the [`Gate`] for a slot with its rank: 0 for a work
//! queue (urgent), `1 + k` for tolerance class `k` (deferrable). When a
//! slot frees while several lanes wait, an urgent lane gets it, except
//! that one slot in every `weight` goes to a deferrable lane, so deferrable
//! work never starves; among deferrable lanes the shortest class goes
//! first. Class lanes have a prefetch of one, so the broker, not the
//! worker, holds the deferrable backlog and can promote it; the one
//! delivery a class lane holds turns urgent once it has waited its class's
//! TTL, as the broker would have promoted it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use celeriac_schema::tolerance::{TOLERANCE_CLASSES, TOLERANCE_CLASSES_MS};
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, Consumer};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use super::Config;
use crate::error::{Error, Result};

/// Default `--urgent-weight`: one slot in four goes to deferrable work
/// while urgent work waits.
pub const DEFAULT_URGENT_WEIGHT: u32 = 4;

/// Ranks: urgent, then one per tolerance class.
pub(super) const RANKS: usize = 1 + TOLERANCE_CLASSES as usize;

/// The urgency settings of a worker.
#[derive(Debug, Clone)]
pub(super) struct Settings {
    /// One slot in every `weight` goes to deferrable work under contention.
    pub(super) weight: u32,
    /// Wait threshold of queues without one of their own.
    pub(super) default_wait: Option<Duration>,
    /// Wait thresholds by logical queue.
    pub(super) waits: HashMap<String, Duration>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            weight: DEFAULT_URGENT_WEIGHT,
            default_wait: None,
            waits: HashMap::new(),
        }
    }
}

impl Settings {
    /// The wait threshold of `queue`, if any.
    pub(super) fn wait_threshold(&self, queue: &str) -> Option<Duration> {
        self.waits.get(queue).copied().or(self.default_wait)
    }
}

/// The slot dispenser shared by all lanes of a session.
#[derive(Debug)]
pub(super) struct Gate {
    semaphore: Arc<Semaphore>,
    weight: u32,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    waiting: [VecDeque<oneshot::Sender<OwnedSemaphorePermit>>; RANKS],
    /// Urgent slots handed out since the last deferrable one.
    streak: u32,
    /// Whether a dispatcher is handing out slots.
    dispatching: bool,
}

/// The gate closed: the worker is stopping.
#[derive(Debug)]
pub(super) struct Closed;

impl Gate {
    /// A gate over `semaphore`'s slots.
    pub(super) fn new(semaphore: Arc<Semaphore>, weight: u32) -> Arc<Gate> {
        Arc::new(Gate {
            semaphore,
            weight: weight.max(1),
            state: Mutex::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A free slot at once, when nobody waits for one.
    pub(super) fn try_acquire(&self, rank: usize) -> Option<OwnedSemaphorePermit> {
        let mut state = self.lock();
        if state.waiting.iter().any(|q| !q.is_empty()) {
            return None;
        }
        let permit = self.semaphore.clone().try_acquire_owned().ok()?;
        state.count(rank, self.weight);
        Some(permit)
    }

    /// Waits for a slot in the order of the ranks (see the module docs).
    pub(super) async fn acquire(
        self: &Arc<Self>,
        rank: usize,
    ) -> std::result::Result<OwnedSemaphorePermit, Closed> {
        if let Some(permit) = self.try_acquire(rank) {
            return Ok(permit);
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut state = self.lock();
            state.waiting[rank.min(RANKS - 1)].push_back(tx);
            if !state.dispatching {
                state.dispatching = true;
                tokio::spawn(self.clone().dispatch());
            }
        }
        rx.await.map_err(|_| Closed)
    }

    /// Like [`Gate::acquire`], except that a deferrable delivery still
    /// waiting after its class's TTL (when the broker would have promoted
    /// it, had the worker not held it) waits on as an urgent one.
    pub(super) async fn acquire_in_turn(
        self: &Arc<Self>,
        rank: usize,
    ) -> std::result::Result<OwnedSemaphorePermit, Closed> {
        let Some(&ttl_ms) = rank
            .checked_sub(1)
            .and_then(|k| TOLERANCE_CLASSES_MS.get(k))
        else {
            return self.acquire(0).await;
        };
        tokio::select! {
            permit = self.acquire(rank) => permit,
            _ = tokio::time::sleep(Duration::from_millis(ttl_ms)) => self.acquire(0).await,
        }
    }

    /// Hands out slots as they free, while anyone waits.
    async fn dispatch(self: Arc<Self>) {
        loop {
            let Ok(permit) = self.semaphore.clone().acquire_owned().await else {
                let mut state = self.lock();
                state.dispatching = false;
                state.waiting.iter_mut().for_each(VecDeque::clear);
                return;
            };
            let mut state = self.lock();
            let mut permit = Some(permit);
            while let Some(slot) = permit.take() {
                let Some(waiter) = state.next(self.weight) else {
                    state.dispatching = false;
                    return;
                };
                // A waiter that gave up hands the slot to the next one.
                permit = waiter.send(slot).err();
            }
        }
    }
}

impl State {
    /// The next waiter: urgent first, a deferrable one every `weight`th
    /// slot, the shortest class first.
    fn next(&mut self, weight: u32) -> Option<oneshot::Sender<OwnedSemaphorePermit>> {
        for queue in &mut self.waiting {
            queue.retain(|tx| !tx.is_closed());
        }
        let deferrable = (1..RANKS).find(|&rank| !self.waiting[rank].is_empty());
        let rank = match (self.waiting[0].is_empty(), deferrable) {
            (true, None) => return None,
            (true, Some(rank)) => rank,
            (false, None) => 0,
            (false, Some(rank)) if self.streak + 1 >= weight => rank,
            (false, Some(_)) => 0,
        };
        self.count(rank, weight);
        self.waiting[rank].pop_front()
    }

    fn count(&mut self, rank: usize, weight: u32) {
        self.streak = match rank {
            0 => (self.streak + 1).min(weight),
            _ => 0,
        };
    }
}

/// Opens the tolerance class lanes of `queue`: one channel and consumer per
/// class, each with a prefetch of one. Returns `(rank, channel, consumer)`.
pub(super) async fn open_class_lanes(
    config: &Config,
    connection: &Connection,
    queue: &str,
) -> Result<Vec<(usize, Channel, Consumer)>> {
    let mut lanes = Vec::with_capacity(TOLERANCE_CLASSES as usize);
    for class in 0..TOLERANCE_CLASSES {
        let channel = connection
            .create_channel()
            .await
            .map_err(Error::amqp("opening a channel"))?;
        channel
            .basic_qos(1, BasicQosOptions { global: false })
            .await
            .map_err(Error::amqp("setting the prefetch"))?;
        let consumer = channel
            .basic_consume(
                config.topology.tolerance_queue(queue, class).into(),
                format!("{}/{queue}/tol.{class}", config.worker_id).into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(Error::amqp("starting a consumer"))?;
        lanes.push((1 + class as usize, channel, consumer));
    }
    Ok(lanes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn order(gate: &Arc<Gate>, waiting: &[(usize, usize)], picks: usize) -> Vec<usize> {
        let mut receivers = Vec::new();
        {
            let mut state = gate.lock();
            for &(rank, count) in waiting {
                for _ in 0..count {
                    let (tx, rx) = oneshot::channel();
                    state.waiting[rank].push_back(tx);
                    receivers.push((rank, rx));
                }
            }
        }
        let mut out = Vec::new();
        for _ in 0..picks {
            let mut state = gate.lock();
            let Some(waiter) = state.next(gate.weight) else {
                break;
            };
            drop(waiter);
            let rank = receivers
                .iter_mut()
                .position(|(_, rx)| {
                    matches!(rx.try_recv(), Err(oneshot::error::TryRecvError::Closed))
                })
                .map(|i| receivers.remove(i).0);
            out.extend(rank);
        }
        out
    }

    #[test]
    fn urgent_first_with_one_deferrable_slot_in_every_weight() {
        let gate = Gate::new(Arc::new(Semaphore::new(1)), 4);
        let got = order(&gate, &[(0, 9), (3, 2), (1, 1)], 12);
        assert_eq!(got, [0, 0, 0, 1, 0, 0, 0, 3, 0, 0, 0, 3]);
    }

    #[test]
    fn deferrable_work_runs_when_nothing_urgent_waits() {
        let gate = Gate::new(Arc::new(Semaphore::new(1)), 4);
        assert_eq!(order(&gate, &[(2, 2), (1, 1)], 5), [1, 2, 2]);
    }

    #[tokio::test]
    async fn slots_go_to_waiters_as_they_free() {
        let semaphore = Arc::new(Semaphore::new(1));
        let gate = Gate::new(semaphore.clone(), 2);
        let first = gate.acquire(0).await.unwrap();
        let (deferred, urgent) = (gate.clone(), gate.clone());
        let d = tokio::spawn(async move { deferred.acquire(1).await.map(|_| "deferrable") });
        tokio::task::yield_now().await;
        let u = tokio::spawn(async move { urgent.acquire(0).await.map(|_| "urgent") });
        tokio::task::yield_now().await;
        assert!(gate.try_acquire(0).is_none(), "others wait");
        drop(first);
        // Weight 2 with one urgent slot already given: the deferrable goes.
        assert_eq!(d.await.unwrap().unwrap(), "deferrable");
        assert_eq!(u.await.unwrap().unwrap(), "urgent");
        semaphore.close();
        assert!(gate.acquire(0).await.is_err());
    }

    #[tokio::test]
    async fn a_deferrable_delivery_held_past_its_class_ttl_turns_urgent() {
        let gate = Gate::new(Arc::new(Semaphore::new(1)), 100);
        let first = gate.acquire(0).await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let waiter = |rank: usize, name: &'static str| {
            let (gate, order) = (gate.clone(), order.clone());
            tokio::spawn(async move {
                let permit = gate.acquire_in_turn(rank).await.unwrap();
                order.lock().unwrap().push(name);
                tokio::task::yield_now().await;
                drop(permit);
            })
        };
        let deferred = waiter(1, "deferrable");
        tokio::task::yield_now().await;
        let early = waiter(0, "urgent early");
        // Past the 1 s class TTL, the deferrable waiter queues as urgent.
        tokio::time::sleep(Duration::from_millis(1_200)).await;
        let late = waiter(0, "urgent late");
        tokio::task::yield_now().await;
        drop(first);
        for task in [deferred, early, late] {
            task.await.unwrap();
        }
        assert_eq!(
            *order.lock().unwrap(),
            ["urgent early", "deferrable", "urgent late"]
        );
    }

    #[test]
    fn wait_thresholds_fall_back_to_the_default() {
        let mut settings = Settings::default();
        assert_eq!(settings.wait_threshold("a"), None);
        settings.default_wait = Some(Duration::from_secs(5));
        settings.waits.insert("b".into(), Duration::from_secs(1));
        assert_eq!(settings.wait_threshold("a"), Some(Duration::from_secs(5)));
        assert_eq!(settings.wait_threshold("b"), Some(Duration::from_secs(1)));
    }
}
