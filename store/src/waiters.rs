//! Waiting for final states without polling: one pub/sub connection per
//! process, shared by every waiter.
//!
//! A waiter subscribes to its task's channel (a second waiter on the same
//! task shares the subscription), then reads the record; the final write
//! publishes on the channel and wakes it. If the pub/sub connection drops,
//! every waiter is woken, reads again and subscribes on a new connection.
//! A slow safety re-read (every [`RECHECK`]) bounds the cost of anything
//! missed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::PubSubSink;
use tokio::sync::{watch, Mutex};
use tokio::time::Instant;
use tracing::debug;

use celeriac_schema::store::{TaskRecord, WorkflowRecord, WorkflowState};
use celeriac_schema::TaskId;

use super::{RedisStore, StoreResult};

/// How often a waiter reads the record even if nothing woke it.
pub(super) const RECHECK: Duration = Duration::from_secs(30);

pub(super) struct Waiters {
    shared: Arc<Shared>,
}

struct Shared {
    client: super::sentinel::PubSubClient,
    /// The live pub/sub connection; also serialises (un)subscribes.
    hub: Mutex<Option<Hub>>,
    entries: StdMutex<HashMap<String, Entry>>,
}

struct Hub {
    sink: PubSubSink,
    epoch: u64,
    alive: Arc<std::sync::atomic::AtomicBool>,
}

struct Entry {
    tx: watch::Sender<u64>,
    waiters: usize,
}

impl Waiters {
    pub(super) fn new(client: super::sentinel::PubSubClient) -> Waiters {
        Waiters {
            shared: Arc::new(Shared {
                client,
                hub: Mutex::new(None),
                entries: StdMutex::new(HashMap::new()),
            }),
        }
    }

    /// Registers a waiter on `channel` and makes sure it is subscribed.
    pub(super) async fn subscribe(&self, channel: &str) -> Subscription {
        let mut hub = self.shared.hub.lock().await;
        let rx = {
            let mut entries = self.shared.lock_entries();
            let entry = entries.entry(channel.to_owned()).or_insert_with(|| Entry {
                tx: watch::channel(0).0,
                waiters: 0,
            });
            entry.waiters += 1;
            entry.tx.subscribe()
        };
        let epoch = self.shared.subscribe_locked(&mut hub, channel).await;
        Subscription {
            shared: self.shared.clone(),
            channel: channel.to_owned(),
            rx,
            epoch,
        }
    }
}

impl Shared {
    fn lock_entries(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Subscribes `channel` on the live connection, connecting first if
    /// needed; returns the connection's epoch, or 0 when Redis cannot be
    /// reached (the waiter then relies on its re-reads).
    async fn subscribe_locked(self: &Arc<Self>, hub: &mut Option<Hub>, channel: &str) -> u64 {
        let alive = hub
            .as_ref()
            .is_some_and(|h| h.alive.load(std::sync::atomic::Ordering::Acquire));
        if !alive {
            let epoch = hub.as_ref().map_or(1, |h| h.epoch + 1);
            *hub = match self.connect(epoch).await {
                Ok(h) => Some(h),
                Err(e) => {
                    debug!(error = %e, "cannot open the result-notification connection");
                    None
                }
            };
        }
        let Some(live) = hub.as_mut() else {
            return 0;
        };
        match live.sink.subscribe(channel).await {
            Ok(()) => live.epoch,
            Err(e) => {
                debug!(error = %e, channel, "subscribe failed");
                live.alive
                    .store(false, std::sync::atomic::Ordering::Release);
                0
            }
        }
    }

    async fn connect(self: &Arc<Self>, epoch: u64) -> redis::RedisResult<Hub> {
        let (sink, mut stream) = self.client.get_async_pubsub().await?.split();
        let alive = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let shared = Arc::downgrade(self);
        let flag = alive.clone();
        tokio::spawn(async move {
            while let Some(msg) = stream.next().await {
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                let entries = shared.lock_entries();
                if let Some(entry) = entries.get(msg.get_channel_name()) {
                    entry.tx.send_modify(|n| *n += 1);
                }
            }
            // The connection is gone: wake everyone to read and resubscribe.
            flag.store(false, std::sync::atomic::Ordering::Release);
            if let Some(shared) = shared.upgrade() {
                for entry in shared.lock_entries().values() {
                    entry.tx.send_modify(|n| *n += 1);
                }
            }
        });
        Ok(Hub { sink, epoch, alive })
    }
}

/// One waiter's interest in one channel; unsubscribes when the last
/// waiter of the channel is dropped.
pub(super) struct Subscription {
    shared: Arc<Shared>,
    channel: String,
    rx: watch::Receiver<u64>,
    epoch: u64,
}

impl Subscription {
    /// Waits for a wake-up; `false` once `deadline` has passed.
    pub(super) async fn changed_before(&mut self, deadline: Instant) -> bool {
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        let until = deadline.min(now + RECHECK);
        let _ = tokio::time::timeout_at(until, self.rx.changed()).await;
        Instant::now() < deadline
    }

    /// Subscribes again if the connection it was made on is gone.
    pub(super) async fn resubscribe_if_needed(&mut self) {
        let mut hub = self.shared.hub.lock().await;
        let current = hub.as_ref().filter(|h| {
            h.alive.load(std::sync::atomic::Ordering::Acquire) && h.epoch == self.epoch
        });
        if current.is_none() {
            self.epoch = self.shared.subscribe_locked(&mut hub, &self.channel).await;
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let shared = self.shared.clone();
        let channel = std::mem::take(&mut self.channel);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let mut hub = shared.hub.lock().await;
            let last = {
                let mut entries = shared.lock_entries();
                match entries.get_mut(&channel) {
                    Some(entry) if entry.waiters > 1 => {
                        entry.waiters -= 1;
                        false
                    }
                    Some(_) => {
                        entries.remove(&channel);
                        true
                    }
                    None => false,
                }
            };
            if last {
                if let Some(live) = hub.as_mut() {
                    let _ = live.sink.unsubscribe(&channel).await;
                }
            }
        });
    }
}

impl RedisStore {
    /// [`Store::wait`].
    pub(crate) async fn wait_record(
        &self,
        id: TaskId,
        timeout: Duration,
    ) -> StoreResult<Option<TaskRecord>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let channel = self.channel(id);
        let mut subscription = self.inner.waiters.subscribe(&channel).await;
        loop {
            // Subscribed first, read second: a final write between the two
            // is seen by the read.
            if let Some(record) = self.get_record(id).await? {
                if record.state.is_terminal() {
                    return Ok(Some(record));
                }
            }
            if !subscription.changed_before(deadline).await {
                return Ok(None);
            }
            subscription.resubscribe_if_needed().await;
        }
    }

    /// [`Store::wait_workflow`].
    pub(crate) async fn wait_workflow_record(
        &self,
        workflow: TaskId,
        timeout: Duration,
    ) -> StoreResult<Option<WorkflowRecord>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let channel = self.channel(workflow);
        let mut subscription = self.inner.waiters.subscribe(&channel).await;
        loop {
            if let Some(record) = self.read_workflow(workflow).await? {
                if record.state != WorkflowState::Running {
                    return Ok(Some(record));
                }
            }
            if !subscription.changed_before(deadline).await {
                return Ok(None);
            }
            subscription.resubscribe_if_needed().await;
        }
    }
}
