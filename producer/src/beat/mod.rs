//! Beat: submits workflows on their schedules, once per tick across any
//! number of replicas.
//!
//! # How a tick is enqueued exactly once
//!
//! Each [`BeatEntry`] (a flow, or the sub-workflow of one of its tasks) has
//! a [`Schedule`] whose tick times every replica computes alike (see
//! [`crate::schedule`]). At tick `T` the tick key is
//! `beat:{flow}:{entry or "*"}:{T in unix seconds}`; the workflow id is the
//! UUID v5 of that key (in [`TICK_NAMESPACE`]), so its nodes' task ids and
//! idempotency keys are deterministic too. The first replica to claim the
//! tick in the shared [`BeatState`] (an atomic set-if-absent) submits the
//! workflow, then marks the tick handled; every other replica sees the tick
//! taken and does nothing. A restarted replica computes the same keys and
//! cannot take a tick twice. When the submit fails (the broker is away) the
//! tick is given back and tried again until the next tick supersedes it.
//!
//! A claim is a lease ([`BeatOptions::claim_lease`], 30 s by default), so
//! that a replica killed between claiming a tick and submitting its run
//! loses nothing: the other replicas keep looking at a tick they found
//! claimed but not handled, and once the lease ends without the handled
//! mark, one of them takes the tick over and submits it (a replica starting
//! up looks at the latest claimed tick the same way). Submitting twice is
//! harmless: [`Producer::submit`] creates a workflow id once, and publishes
//! again only roots the broker may never have received, whose deterministic
//! keys keep them to one run. So every tick is enqueued once: never lost,
//! never run twice.
//!
//! # Overlap
//!
//! The latest run of each entry is kept in the shared state, so every
//! replica knows it. When a tick comes while that run is still going (its
//! workflow is not finished in the store), the entry's [`Overlap`] decides:
//! - `skip`: the tick is not enqueued; it is logged and counted;
//! - `queue`: the tick waits and is enqueued once the run finishes; at most
//!   one tick waits (a later one replaces it), never a backlog;
//! - `allow`: the tick is enqueued anyway.
//!
//! # Missed ticks
//!
//! A schedule new to the state starts at its next tick. After every
//! replica was down (or a replica lagged), only the latest missed tick is
//! enqueued, once; older ones are dropped and counted as missed, so a
//! restart never bursts. A waiting (`queue`) run is taken with a lease too:
//! it keeps waiting until its run is submitted.
//!
//! # Examples
//!
//! ```no_run
//! # async fn demo(producer: celeriac_producer::Producer) -> celeriac_producer::Result<()> {
//! use std::sync::Arc;
//! use celeriac_producer::beat::{Beat, BeatEntry, RedisBeatState};
//! use celeriac_producer::schedule::{Overlap, Schedule};
//! use celeriac_schema::workflow::{Node, Workflow};
//!
//! let entry = BeatEntry::new("reports", None, Schedule::cron("0 6 * * *")?, Overlap::Skip, |id| {
//!     let mut workflow = Workflow::new();
//!     workflow.id = id;
//!     workflow.push(Node::new("build", "reports.build", rmpv::Value::Nil));
//!     workflow
//! });
//! let state = Arc::new(RedisBeatState::connect("redis://127.0.0.1:6379", "celeriac").await?);
//! let beat = Beat::new(producer, state, vec![entry]);
//! let stats = beat.run(async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! println!("{} runs submitted", stats.submitted);
//! # Ok(()) }
//! ```

mod entry;
mod state;
mod stats;
mod tick;

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::{debug, info, warn};

use crate::error::{Error, Result};
use crate::producer::Producer;
use crate::schedule::{unix_secs, Overlap, Schedule};

pub use entry::{BeatEntry, TICK_NAMESPACE};
pub use state::{BeatState, EntryState, MemoryBeatState, RedisBeatState, TickClaim};
use stats::Counters;
pub use stats::{BeatMonitor, BeatStats, TickOutcome};

/// How long a tick's claim holds by default; see
/// [`BeatOptions::claim_lease`].
pub const DEFAULT_CLAIM_LEASE: Duration = Duration::from_secs(30);

/// Knobs of a [`Beat`].
#[derive(Debug, Clone)]
pub struct BeatOptions {
    /// How often a waiting (`queue`) run checks whether the run before it
    /// finished, and how soon a failed submit is tried again (default
    /// 500 ms).
    pub poll: Duration,
    /// This replica's name in the tick keys it takes (default: host name
    /// and process id, plus a random suffix).
    pub replica: String,
    /// How long a claim on a tick (or on a waiting run) holds before
    /// another replica may take it over, when the replica that claimed it
    /// has not handled it by then (default 30 s). Keep it longer than a
    /// submit takes: a lease that ends during a slow submit lets a second
    /// replica submit too, which runs nothing twice but does the work
    /// twice.
    pub claim_lease: Duration,
}

impl Default for BeatOptions {
    fn default() -> Self {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "beat".into());
        let id = uuid::Uuid::now_v7().simple().to_string();
        BeatOptions {
            poll: Duration::from_millis(500),
            replica: format!("{host}-{}-{}", std::process::id(), &id[id.len() - 6..]),
            claim_lease: DEFAULT_CLAIM_LEASE,
        }
    }
}

/// Submits its entries' workflows at their ticks; see the module
/// documentation.
#[derive(Debug)]
pub struct Beat {
    producer: Producer,
    state: Arc<dyn BeatState>,
    entries: Vec<BeatEntry>,
    options: BeatOptions,
    counters: Arc<Counters>,
}

impl Beat {
    /// A beat for `entries`, submitting through `producer` (which needs a
    /// state store) and sharing ticks through `state`.
    pub fn new(producer: Producer, state: Arc<dyn BeatState>, entries: Vec<BeatEntry>) -> Beat {
        Beat {
            producer,
            state,
            entries,
            options: BeatOptions::default(),
            counters: Arc::default(),
        }
    }

    /// Replaces the options.
    pub fn options(mut self, options: BeatOptions) -> Beat {
        self.options = options;
        self
    }

    /// What this beat did so far.
    pub fn stats(&self) -> BeatStats {
        self.counters.snapshot()
    }

    /// A monitor of this beat's counters that outlives [`Beat::run`]'s
    /// borrow, for a metrics server.
    pub fn monitor(&self) -> BeatMonitor {
        BeatMonitor {
            counters: self.counters.clone(),
        }
    }

    /// Runs until `shutdown` completes; returns what it did.
    ///
    /// # Errors
    ///
    /// [`Error::NoStore`] when the producer has no state store; store
    /// errors while reading where a schedule stands at start-up. Errors
    /// during a tick are logged and the tick is tried again.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<BeatStats> {
        if self.producer.store().is_none() {
            return Err(Error::NoStore {
                what: "beat (to know whether a previous run is still going)",
            });
        }
        let now = SystemTime::now();
        // Where each entry stands: the latest tick handled, and the ticks
        // other replicas hold without having handled them yet.
        let mut cursors = Vec::with_capacity(self.entries.len());
        for entry in &self.entries {
            let label = entry.label();
            let cursor = match self.state.entry(&label).await?.last_tick {
                // The latest claimed tick may be one whose replica died
                // before handling it: it is looked at like a held one.
                Some(tick) => Cursor {
                    last: tick,
                    held: vec![(tick, false)],
                },
                // New to the state: start at the next tick.
                None => Cursor {
                    last: entry
                        .schedule
                        .latest_at_or_before(now)
                        .map_or(i64::MIN, unix_secs),
                    held: Vec::new(),
                },
            };
            info!(entry = %label, schedule = %entry.schedule, overlap = %entry.overlap, "scheduled");
            cursors.push(cursor);
        }
        tokio::pin!(shutdown);
        loop {
            let now = SystemTime::now();
            self.counters
                .last_turn_ms
                .store(celeriac_schema::now_ms(), Ordering::Relaxed);
            let mut wake = now + self.options.poll;
            for (entry, cursor) in self.entries.iter().zip(cursors.iter_mut()) {
                self.step(entry, cursor, now).await;
                if let Some(next) = entry.schedule.next_after(now) {
                    wake = wake.min(next);
                }
            }
            // A few milliseconds past the tick, so that it is due on waking.
            let sleep = wake
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
                + Duration::from_millis(5);
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep(sleep) => {}
            }
        }
        let stats = self.stats();
        info!(?stats, "beat stopped");
        Ok(stats)
    }

    /// Handles a due tick of `entry`, the ticks other replicas held, and
    /// its waiting run, if any.
    async fn step(&self, entry: &BeatEntry, cursor: &mut Cursor, now: SystemTime) {
        self.recheck_held(entry, cursor, now).await;
        if let Some(latest) = entry.schedule.latest_at_or_before(now) {
            let tick = unix_secs(latest);
            if tick > cursor.last {
                let missed = missed_between(&entry.schedule, cursor.last, latest);
                if missed > 0 {
                    self.counters.missed.fetch_add(missed, Ordering::Relaxed);
                    warn!(entry = %entry.label(), missed, tick, "ticks missed while beat was not running: enqueueing only the latest");
                }
                match self.tick(entry, tick).await {
                    Ok(outcome) => {
                        debug!(entry = %entry.label(), tick, ?outcome, "tick");
                        self.counters
                            .last_tick_ms
                            .store(celeriac_schema::now_ms(), Ordering::Relaxed);
                        if outcome == TickOutcome::Held {
                            cursor.held.push((tick, true));
                        }
                        cursor.last = tick;
                    }
                    Err(e) => {
                        self.counters.failed.fetch_add(1, Ordering::Relaxed);
                        warn!(entry = %entry.label(), tick, error = %e, "could not submit the tick's run; trying again");
                        // Older ticks are not missed again on the retry.
                        if let Some(prev) = entry
                            .schedule
                            .latest_at_or_before(latest - Duration::from_secs(1))
                        {
                            cursor.last = cursor.last.max(unix_secs(prev));
                        }
                    }
                }
            }
        }
        if entry.overlap == Overlap::Queue {
            if let Err(e) = self.release_pending(entry).await {
                warn!(entry = %entry.label(), error = %e, "could not check the queued run");
            }
        }
    }

    /// Looks again at the ticks other replicas held: each is dropped once
    /// handled, and taken over once its lease ends unhandled.
    async fn recheck_held(&self, entry: &BeatEntry, cursor: &mut Cursor, now: SystemTime) {
        if cursor.held.is_empty() {
            return;
        }
        // A tick's mark lives its TTL from about its time: past half of
        // it, a missing mark could mean an expired one.
        let oldest = unix_secs(now) - i64::try_from((entry.tick_ttl() / 2).as_secs()).unwrap_or(0);
        let mut still = Vec::new();
        for (tick, seen) in std::mem::take(&mut cursor.held) {
            if tick < oldest {
                continue;
            }
            match self.handle_tick(entry, tick, seen).await {
                Ok(TickOutcome::Held) => still.push((tick, seen)),
                Ok(outcome) => debug!(entry = %entry.label(), tick, ?outcome, "held tick"),
                Err(e) => {
                    self.counters.failed.fetch_add(1, Ordering::Relaxed);
                    warn!(entry = %entry.label(), tick, error = %e, "could not submit the run of a tick taken over; trying again");
                    still.push((tick, seen));
                }
            }
        }
        cursor.held = still;
    }
}

/// Where an entry stands in [`Beat::run`].
#[derive(Debug)]
struct Cursor {
    /// The latest tick handled (unix seconds).
    last: i64,
    /// Ticks other replicas claimed and have not handled yet, and whether
    /// this replica saw each come (rather than found it at start-up).
    held: Vec<(i64, bool)>,
}

/// Ticks strictly between `after` (unix seconds) and `latest`, counted up
/// to a bound.
fn missed_between(schedule: &Schedule, after: i64, latest: SystemTime) -> u64 {
    if after == i64::MIN {
        return 0;
    }
    let start = match u64::try_from(after) {
        Ok(secs) => UNIX_EPOCH + Duration::from_secs(secs),
        Err(_) => return 0,
    };
    if let Schedule::Interval(period) = schedule {
        let gap = latest.duration_since(start).unwrap_or_default();
        return (gap.as_secs_f64() / period.as_secs_f64()).ceil().max(1.0) as u64 - 1;
    }
    let mut count = 0;
    let mut t = start;
    while let Some(next) = schedule.next_after(t) {
        if next >= latest || count >= 10_000 {
            break;
        }
        count += 1;
        t = next;
    }
    count
}

#[cfg(test)]
mod tests;
