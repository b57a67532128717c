//! What a beat did: the outcome of a tick, and the counters a monitor
//! reads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use celeriac_schema::TaskId;

/// What happened at a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TickOutcome {
    /// This replica submitted the run.
    Submitted(TaskId),
    /// Another replica handled the tick.
    Taken,
    /// Another replica holds the tick's claim and has not handled it yet:
    /// [`Beat::run`] looks at it again until it is handled, or takes it
    /// over once that replica's lease ends.
    Held,
    /// The previous run is still going: the tick was skipped.
    Skipped {
        /// The run still going.
        running: TaskId,
    },
    /// The previous run is still going: the tick waits for it.
    Queued {
        /// The run it waits for.
        behind: TaskId,
    },
}

/// Counts of what a beat did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct BeatStats {
    /// Runs this replica submitted (queued ones included).
    pub submitted: u64,
    /// Ticks another replica took.
    pub taken: u64,
    /// Ticks this replica took over from a replica whose claim ended
    /// before it handled them (it died between claiming and submitting).
    pub taken_over: u64,
    /// Ticks skipped because the previous run was still going.
    pub skipped: u64,
    /// Ticks put to wait behind a run still going.
    pub queued: u64,
    /// Ticks dropped while no replica was running (only the latest missed
    /// tick is enqueued).
    pub missed: u64,
    /// Ticks whose submit failed (given back and tried again).
    pub failed: u64,
    /// When this replica last handled a tick (submitted, taken, skipped
    /// or queued), in Unix milliseconds; `None` before the first.
    pub last_tick_ms: Option<u64>,
}

#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) submitted: AtomicU64,
    pub(super) taken: AtomicU64,
    pub(super) taken_over: AtomicU64,
    pub(super) skipped: AtomicU64,
    pub(super) queued: AtomicU64,
    pub(super) missed: AtomicU64,
    pub(super) failed: AtomicU64,
    /// Unix ms of the last handled tick, 0 for none.
    pub(super) last_tick_ms: AtomicU64,
    /// Unix ms of the scheduling loop's last turn, 0 before the first.
    pub(super) last_turn_ms: AtomicU64,
}

impl Counters {
    pub(super) fn snapshot(&self) -> BeatStats {
        BeatStats {
            submitted: self.submitted.load(Ordering::Relaxed),
            taken: self.taken.load(Ordering::Relaxed),
            taken_over: self.taken_over.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            queued: self.queued.load(Ordering::Relaxed),
            missed: self.missed.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            last_tick_ms: Some(self.last_tick_ms.load(Ordering::Relaxed)).filter(|ms| *ms > 0),
        }
    }
}

/// Reads a running [`Beat`]'s counters from elsewhere (a metrics server);
/// cheap to clone.
#[derive(Debug, Clone)]
pub struct BeatMonitor {
    pub(super) counters: Arc<Counters>,
}

impl BeatMonitor {
    /// What the beat did so far.
    pub fn stats(&self) -> BeatStats {
        self.counters.snapshot()
    }

    /// How long ago the scheduling loop last turned (it turns at least
    /// every [`BeatOptions::poll`] while it runs); `None` before it
    /// started. A value far above the poll interval means beat is stuck.
    pub fn since_last_turn(&self) -> Option<Duration> {
        let at = self.counters.last_turn_ms.load(Ordering::Relaxed);
        (at > 0).then(|| Duration::from_millis(celeriac_schema::now_ms().saturating_sub(at)))
    }
}
