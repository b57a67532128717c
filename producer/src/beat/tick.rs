//! One tick of one entry: claiming it, submitting its run (or queueing it
//! behind the running one, or skipping it), and handing it back on errors.

use std::sync::atomic::Ordering;

use celeriac_schema::store::WorkflowState;
use celeriac_schema::workflow::Workflow;
use celeriac_schema::TaskId;
use tracing::{debug, info, warn};

use super::{Beat, BeatEntry, EntryState, TickClaim, TickOutcome};
use crate::error::{Error, Result};
use crate::schedule::Overlap;

impl Beat {
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
    pub(super) async fn handle_tick(
        &self,
        entry: &BeatEntry,
        tick: i64,
        seen: bool,
    ) -> Result<TickOutcome> {
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
    pub(super) async fn release_pending(&self, entry: &BeatEntry) -> Result<()> {
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
