//! Counters of what a worker did.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Live counters of one worker, shared with its [`crate::WorkerHandle`].
#[derive(Debug, Default)]
pub struct WorkerStats {
    pub(crate) received: AtomicU64,
    pub(crate) succeeded: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) expired: AtomicU64,
    pub(crate) requeued: AtomicU64,
    pub(crate) leased: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    pub(crate) in_flight: AtomicU64,
    pub(crate) duplicates_suppressed: AtomicU64,
    pub(crate) deferred: AtomicU64,
    pub(crate) store_errors: AtomicU64,
    pub(crate) revoked: AtomicU64,
    pub(crate) purged: AtomicU64,
    pub(crate) events_dropped: AtomicU64,
    pub(crate) ready: AtomicBool,
    pub(crate) store_down: AtomicBool,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StatsSnapshot {
    /// Deliveries received.
    pub received: u64,
    /// Runs that succeeded.
    pub succeeded: u64,
    /// Runs that failed (retried or dead-lettered).
    pub failed: u64,
    /// Retries scheduled.
    pub retried: u64,
    /// Messages dead-lettered by the worker.
    pub dead_lettered: u64,
    /// Tasks dropped because they were past their expiry.
    pub expired: u64,
    /// Deliveries handed back to the queue at shutdown.
    pub requeued: u64,
    /// Long runs whose delivery was swapped for a lease.
    pub leased: u64,
    /// Reconnections after a lost connection.
    pub reconnects: u64,
    /// Runs in progress.
    pub in_flight: u64,
    /// Deliveries not run because their idempotency key already succeeded.
    pub duplicates_suppressed: u64,
    /// Deliveries put back to wait because another run held their lease.
    pub deferred: u64,
    /// Failed calls to the state store.
    pub store_errors: u64,
    /// Deliveries not run, or runs stopped, because they were revoked.
    pub revoked: u64,
    /// Deliveries dropped without running because their queue was purged
    /// after they were sent (see `celeriac purge`).
    pub purged: u64,
    /// Task events not published (the event queue was full or the broker
    /// connection was down).
    pub events_dropped: u64,
}

impl WorkerStats {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether the worker is connected, declared and consuming, and its
    /// state store (if any) answers.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && !self.store_down.load(Ordering::Relaxed)
    }

    /// Whether the state store failed its last call.
    pub fn store_down(&self) -> bool {
        self.store_down.load(Ordering::Relaxed)
    }

    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            received: get(&self.received),
            succeeded: get(&self.succeeded),
            failed: get(&self.failed),
            retried: get(&self.retried),
            dead_lettered: get(&self.dead_lettered),
            expired: get(&self.expired),
            requeued: get(&self.requeued),
            leased: get(&self.leased),
            reconnects: get(&self.reconnects),
            in_flight: get(&self.in_flight),
            duplicates_suppressed: get(&self.duplicates_suppressed),
            deferred: get(&self.deferred),
            store_errors: get(&self.store_errors),
            revoked: get(&self.revoked),
            purged: get(&self.purged),
            events_dropped: get(&self.events_dropped),
        }
    }
}
