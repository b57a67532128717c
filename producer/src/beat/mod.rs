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

mod state;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use celeriac_schema::store::WorkflowState;
use celeriac_schema::workflow::Workflow;
use celeriac_schema::TaskId;
use tracing::{debug, info, warn};

use crate::error::{Error, Result};
use crate::producer::Producer;
use crate::schedule::{unix_secs, Overlap, Schedule};

pub use state::{BeatState, EntryState, MemoryBeatState, RedisBeatState, TickClaim};

/// The UUID v5 namespace of beat workflow ids.
pub const TICK_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x77bd_aa6a_37d8_4002_b4c0_d04e_98e4_1072);

/// A tick key lives ten periods, at least this long, so that replicas
/// whose clocks differ still agree on who took it.
const MIN_TICK_TTL: Duration = Duration::from_secs(3600);

/// ... and at most this long.
const MAX_TICK_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// How long a tick's claim holds by default; see
/// [`BeatOptions::claim_lease`].
pub const DEFAULT_CLAIM_LEASE: Duration = Duration::from_secs(30);

type BuildWorkflow = dyn Fn(TaskId) -> Workflow + Send + Sync;

/// One scheduled thing: a flow, or the sub-workflow of one of its tasks.
#[derive(Clone)]
pub struct BeatEntry {
    flow: String,
    entry: Option<String>,
    schedule: Schedule,
    overlap: Overlap,
    outputs: Vec<String>,
    build: Arc<BuildWorkflow>,
}

impl std::fmt::Debug for BeatEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BeatEntry")
            .field("flow", &self.flow)
            .field("entry", &self.entry)
            .field("schedule", &self.schedule)
            .field("overlap", &self.overlap)
            .finish_non_exhaustive()
    }
}

impl BeatEntry {
    /// An entry of flow `flow` (`entry`: the task whose sub-workflow runs,
    /// `None` for the whole flow); `build` makes the workflow of a run
    /// with the id it is given.
    ///
    /// # Examples
    ///
    /// ```
    /// use celeriac_producer::beat::BeatEntry;
    /// use celeriac_producer::schedule::{Overlap, Schedule};
    /// use celeriac_schema::workflow::Workflow;
    ///
    /// let entry = BeatEntry::new("etl", Some("load".into()), Schedule::interval_secs(60.0)?, Overlap::Queue,
    ///     |id| Workflow { id, nodes: Vec::new() });
    /// assert_eq!(entry.label(), "etl:load");
    /// # Ok::<(), celeriac_producer::Error>(())
    /// ```
    pub fn new(
        flow: impl Into<String>,
        entry: Option<String>,
        schedule: Schedule,
        overlap: Overlap,
        build: impl Fn(TaskId) -> Workflow + Send + Sync + 'static,
    ) -> BeatEntry {
        BeatEntry {
            flow: flow.into(),
            entry,
            schedule,
            overlap,
            outputs: Vec::new(),
            build: Arc::new(build),
        }
    }

    /// The nodes whose results are a run's result (default: every node
    /// nothing depends on).
    pub fn outputs(mut self, outputs: Vec<String>) -> BeatEntry {
        self.outputs = outputs;
        self
    }

    /// `{flow}:{entry}`, or `{flow}:*` for the whole flow.
    pub fn label(&self) -> String {
        format!("{}:{}", self.flow, self.entry.as_deref().unwrap_or("*"))
    }

    /// The schedule.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// The overlap policy.
    pub fn overlap(&self) -> Overlap {
        self.overlap
    }

    /// The tick key of tick `tick` (unix seconds).
    ///
    /// # Examples
    ///
    /// ```
    /// # use celeriac_producer::beat::BeatEntry;
    /// # use celeriac_producer::schedule::{Overlap, Schedule};
    /// # use celeriac_schema::workflow::Workflow;
    /// let entry = BeatEntry::new("etl", None, Schedule::interval_secs(60.0)?, Overlap::Skip,
    ///     |id| Workflow { id, nodes: Vec::new() });
    /// assert_eq!(entry.tick_key(1_700_000_040), "beat:etl:*:1700000040");
    /// assert_eq!(entry.run_id(1_700_000_040), entry.run_id(1_700_000_040));
    /// # Ok::<(), celeriac_producer::Error>(())
    /// ```
    pub fn tick_key(&self, tick: i64) -> String {
        format!("beat:{}:{tick}", self.label())
    }

    /// The workflow id of tick `tick`'s run: UUID v5 of its tick key.
    pub fn run_id(&self, tick: i64) -> TaskId {
        TaskId::from_uuid(uuid::Uuid::new_v5(
            &TICK_NAMESPACE,
            self.tick_key(tick).as_bytes(),
        ))
    }

    fn tick_ttl(&self) -> Duration {
        self.schedule
            .period()
            .saturating_mul(10)
            .clamp(MIN_TICK_TTL, MAX_TICK_TTL)
    }
}

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
struct Counters {
    submitted: AtomicU64,
    taken: AtomicU64,
    taken_over: AtomicU64,
    skipped: AtomicU64,
    queued: AtomicU64,
    missed: AtomicU64,
    failed: AtomicU64,
    /// Unix ms of the last handled tick, 0 for none.
    last_tick_ms: AtomicU64,
    /// Unix ms of the scheduling loop's last turn, 0 before the first.
    last_turn_ms: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> BeatStats {
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
    counters: Arc<Counters>,
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

    /// Handles tick `tick` (unix seconds) of `entry` now: takes it, applies
    /// the overlap policy, submits its run and marks the tick handled. A
    /// tick another replica claimed is taken over once its lease ends
    /// unhandled.
    ///
    /// # Errors
    ///
    /// Store and broker errors; the tick is then given back, so that a
    /// later call may take it again.
    pub async fn tick(&self, entry: &BeatEntry, tick: i64) -> Result<TickOutcome> {
        self.handle_tick(entry, tick, true).await
    }

    /// [`Beat::tick`]; `seen`: whether this replica saw the tick come (a
    /// tick found handled is then counted as taken by another replica),
    /// rather than found it claimed at start-up.
    async fn handle_tick(&self, entry: &BeatEntry, tick: i64, seen: bool) -> Result<TickOutcome> {
        let label = entry.label();
        let owner = &self.options.replica;
        let ttl = entry.tick_ttl();
        match self
            .state
            .claim_tick(&label, tick, owner, self.options.claim_lease, ttl)
            .await?
        {
            TickClaim::Claimed => {}
            TickClaim::TakenOver { from } => {
                self.counters.taken_over.fetch_add(1, Ordering::Relaxed);
                warn!(entry = %label, tick, replica = %from, "the replica that claimed this tick stopped before handling it: taking it over");
            }
            TickClaim::Held { by } => {
                debug!(entry = %label, tick, replica = %by, "tick held by another replica");
                return Ok(TickOutcome::Held);
            }
            TickClaim::Done => {
                if seen {
                    self.counters.taken.fetch_add(1, Ordering::Relaxed);
                }
                return Ok(TickOutcome::Taken);
            }
        }
        let result = self.handle_claimed(entry, &label, tick).await;
        match &result {
            Ok(_) => {
                // Unmarked, the tick is taken over once the lease ends: its
                // run is then found submitted (or is submitted again, which
                // runs nothing twice).
                if let Err(e) = self.state.finish_tick(&label, tick, owner, ttl).await {
                    warn!(entry = %label, tick, error = %e, "handled, but could not mark the tick handled");
                }
            }
            Err(_) => {
                if let Err(e) = self.state.release_tick(&label, tick, owner).await {
                    warn!(entry = %label, tick, error = %e, "could not give the tick back");
                }
            }
        }
        result
    }

    async fn handle_claimed(
        &self,
        entry: &BeatEntry,
        label: &str,
        tick: i64,
    ) -> Result<TickOutcome> {
        let state = self.state.entry(label).await?;
        if entry.overlap != Overlap::Allow {
            if let Some(running) = self.running(&state).await? {
                if entry.overlap == Overlap::Skip {
                    self.counters.skipped.fetch_add(1, Ordering::Relaxed);
                    info!(entry = %label, tick, %running, "previous run still going: tick skipped");
                    return Ok(TickOutcome::Skipped { running });
                }
                self.state.set_pending(label, tick).await?;
                self.counters.queued.fetch_add(1, Ordering::Relaxed);
                info!(entry = %label, tick, %running, "previous run still going: tick queued behind it");
                return Ok(TickOutcome::Queued { behind: running });
            }
            if entry.overlap == Overlap::Queue && state.pending.is_some() {
                // A waiting run goes first; this tick takes its place.
                let behind = state.last_run.map_or(entry.run_id(tick), |(_, id)| id);
                self.state.set_pending(label, tick).await?;
                self.counters.queued.fetch_add(1, Ordering::Relaxed);
                return Ok(TickOutcome::Queued { behind });
            }
        }
        let id = self.submit(entry, label, tick).await?;
        Ok(TickOutcome::Submitted(id))
    }

    /// The last run of an entry, if it is still going.
    async fn running(&self, state: &EntryState) -> Result<Option<TaskId>> {
        let Some((_, run)) = state.last_run else {
            return Ok(None);
        };
        let store = self
            .producer
            .store()
            .ok_or(Error::NoStore { what: "beat" })?;
        // A workflow the store forgot (expired) is long finished.
        Ok(match store.get_workflow(run).await? {
            Some(record) if record.state == WorkflowState::Running => Some(run),
            _ => None,
        })
    }

    async fn submit(&self, entry: &BeatEntry, label: &str, tick: i64) -> Result<TaskId> {
        let id = entry.run_id(tick);
        let workflow = (entry.build)(id);
        let workflow = Workflow { id, ..workflow };
        self.producer.submit(&workflow, &entry.outputs).await?;
        // The run is out: from here on the tick must not be given back, or
        // a retry would submit the same workflow again.
        if let Err(e) = self.state.set_last_run(label, tick, id).await {
            warn!(entry = %label, tick, workflow = %id, error = %e, "submitted, but could not record it as the entry's last run");
        }
        self.counters
            .last_tick_ms
            .store(celeriac_schema::now_ms(), Ordering::Relaxed);
        self.counters.submitted.fetch_add(1, Ordering::Relaxed);
        info!(entry = %label, tick, workflow = %id, nodes = workflow.nodes.len(), "submitted");
        Ok(id)
    }

    /// Submits the waiting run of a `queue` entry once the run before it
    /// finished.
    async fn release_pending(&self, entry: &BeatEntry) -> Result<()> {
        let label = entry.label();
        let state = self.state.entry(&label).await?;
        let Some(tick) = state.pending else {
            return Ok(());
        };
        if state.last_run.is_some_and(|(last, _)| last >= tick) {
            // Submitted by a replica that stopped before clearing it.
            return self.state.clear_pending(&label, tick).await;
        }
        if self.running(&state).await?.is_some() {
            return Ok(());
        }
        // The tick keeps waiting until its run is out: a replica dying in
        // between leaves it to the next once the lease ends, and a failed
        // submit is tried again at the next check.
        if !self
            .state
            .take_pending(
                &label,
                tick,
                &self.options.replica,
                self.options.claim_lease,
            )
            .await?
        {
            return Ok(());
        }
        self.submit(entry, &label, tick).await?;
        if let Err(e) = self.state.clear_pending(&label, tick).await {
            warn!(entry = %label, tick, error = %e, "submitted the queued run, but could not clear it");
        }
        Ok(())
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
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn tick_keys_and_ids_are_deterministic() {
        let build = |id| Workflow { id, nodes: vec![] };
        let a = BeatEntry::new(
            "f",
            None,
            Schedule::interval_secs(1.0).unwrap(),
            Overlap::Skip,
            build,
        );
        let b = BeatEntry::new(
            "f",
            Some("t".into()),
            Schedule::interval_secs(1.0).unwrap(),
            Overlap::Skip,
            build,
        );
        assert_eq!(a.tick_key(5), "beat:f:*:5");
        assert_eq!(b.tick_key(5), "beat:f:t:5");
        assert_eq!(a.run_id(5), a.clone().run_id(5));
        assert_ne!(a.run_id(5), a.run_id(6));
        assert_ne!(a.run_id(5), b.run_id(5));
        assert_eq!(a.tick_ttl(), MIN_TICK_TTL);
    }

    #[test]
    fn missed_ticks_are_counted() {
        let s = Schedule::interval_secs(10.0).unwrap();
        assert_eq!(missed_between(&s, 100, at(110)), 0);
        assert_eq!(missed_between(&s, 100, at(150)), 4);
        assert_eq!(missed_between(&s, i64::MIN, at(150)), 0);
        let c = Schedule::cron("* * * * *").unwrap();
        assert_eq!(missed_between(&c, 60, at(300)), 3);
    }

    #[tokio::test]
    async fn memory_state_takes_each_tick_once_and_one_pending() {
        let state = MemoryBeatState::default();
        let (lease, ttl) = (Duration::from_secs(60), Duration::from_secs(3600));
        assert_eq!(
            state.claim_tick("e", 10, "a", lease, ttl).await.unwrap(),
            TickClaim::Claimed
        );
        assert_eq!(
            state.claim_tick("e", 10, "b", lease, ttl).await.unwrap(),
            TickClaim::Held { by: "a".into() }
        );
        state.release_tick("e", 10, "b").await.unwrap();
        assert!(!state
            .claim_tick("e", 10, "b", lease, ttl)
            .await
            .unwrap()
            .is_ours());
        state.release_tick("e", 10, "a").await.unwrap();
        assert!(state
            .claim_tick("e", 10, "b", lease, ttl)
            .await
            .unwrap()
            .is_ours());
        state.finish_tick("e", 10, "b", ttl).await.unwrap();
        assert_eq!(
            state.claim_tick("e", 10, "a", lease, ttl).await.unwrap(),
            TickClaim::Done
        );
        state.release_tick("e", 10, "b").await.unwrap();
        assert_eq!(
            state.claim_tick("e", 10, "a", lease, ttl).await.unwrap(),
            TickClaim::Done,
            "a handled tick is never given back"
        );
        assert!(state
            .claim_tick("e", 9, "b", lease, ttl)
            .await
            .unwrap()
            .is_ours());
        assert_eq!(state.entry("e").await.unwrap().last_tick, Some(10));
        state.set_pending("e", 11).await.unwrap();
        state.set_pending("e", 12).await.unwrap();
        assert!(!state.take_pending("e", 11, "a", lease).await.unwrap());
        assert!(state.take_pending("e", 12, "a", lease).await.unwrap());
        assert!(
            !state.take_pending("e", 12, "b", lease).await.unwrap(),
            "held by a"
        );
        assert!(state.take_pending("e", 12, "a", lease).await.unwrap());
        state.clear_pending("e", 11).await.unwrap();
        assert_eq!(state.entry("e").await.unwrap().pending, Some(12));
        state.clear_pending("e", 12).await.unwrap();
        assert!(!state.take_pending("e", 12, "a", lease).await.unwrap());
        let id = TaskId::new();
        state.set_last_run("e", 12, id).await.unwrap();
        state.set_last_run("e", 11, TaskId::new()).await.unwrap();
        assert_eq!(state.entry("e").await.unwrap().last_run, Some((12, id)));
    }

    #[tokio::test]
    async fn memory_state_hands_an_unhandled_tick_over_once_its_lease_ends() {
        let state = MemoryBeatState::default();
        let ttl = Duration::from_secs(3600);
        let short = Duration::from_millis(30);
        assert!(state
            .claim_tick("e", 10, "dead", short, ttl)
            .await
            .unwrap()
            .is_ours());
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(
            state
                .claim_tick("e", 10, "b", Duration::from_secs(60), ttl)
                .await
                .unwrap(),
            TickClaim::TakenOver {
                from: "dead".into()
            }
        );
        assert_eq!(
            state
                .claim_tick("e", 10, "c", Duration::from_secs(60), ttl)
                .await
                .unwrap(),
            TickClaim::Held { by: "b".into() }
        );
        state.set_pending("e", 20).await.unwrap();
        assert!(state.take_pending("e", 20, "dead", short).await.unwrap());
        assert!(!state.take_pending("e", 20, "b", short).await.unwrap());
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(state.take_pending("e", 20, "b", short).await.unwrap());
    }
}
