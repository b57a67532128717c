//! Beat state in memory, for one beat process and tests.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use celeriac_schema::TaskId;

use super::{BeatState, EntryState, TickClaim};
use crate::error::Result;

/// Beat state in memory: for one beat process, and tests.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use celeriac_producer::beat::{BeatState, MemoryBeatState, TickClaim};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let state = MemoryBeatState::default();
/// let (lease, ttl) = (Duration::from_secs(30), Duration::from_secs(3600));
/// assert_eq!(state.claim_tick("nightly:*", 120, "a", lease, ttl).await?, TickClaim::Claimed);
/// assert!(!state.claim_tick("nightly:*", 120, "b", lease, ttl).await?.is_ours());
/// state.finish_tick("nightly:*", 120, "a", ttl).await?;
/// assert_eq!(state.claim_tick("nightly:*", 120, "b", lease, ttl).await?, TickClaim::Done);
/// assert_eq!(state.entry("nightly:*").await?.last_tick, Some(120));
/// # Ok::<(), celeriac_producer::Error>(()) }).unwrap();
/// ```
#[derive(Debug, Default)]
pub struct MemoryBeatState {
    inner: Mutex<MemoryInner>,
}

#[derive(Debug, Default)]
struct MemoryInner {
    ticks: HashMap<(String, i64), TickMark>,
    entries: HashMap<String, EntryState>,
    /// The lease on each entry's waiting tick: (tick, owner, end).
    pending_leases: HashMap<String, (i64, String, Instant)>,
}

#[derive(Debug)]
enum TickMark {
    Claim { owner: String, until: Instant },
    Done,
}

impl MemoryBeatState {
    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryInner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait::async_trait]
impl BeatState for MemoryBeatState {
    async fn claim_tick(
        &self,
        entry: &str,
        tick: i64,
        owner: &str,
        lease: Duration,
        _ttl: Duration,
    ) -> Result<TickClaim> {
        let mut inner = self.lock();
        let now = Instant::now();
        let claim = TickMark::Claim {
            owner: owner.to_owned(),
            until: now + lease,
        };
        let key = (entry.to_owned(), tick);
        let taken = match inner.ticks.get(&key) {
            None => TickClaim::Claimed,
            Some(TickMark::Done) => return Ok(TickClaim::Done),
            Some(TickMark::Claim { owner: by, until }) if *until > now => {
                return Ok(TickClaim::Held { by: by.clone() })
            }
            Some(TickMark::Claim { owner: from, .. }) => {
                TickClaim::TakenOver { from: from.clone() }
            }
        };
        inner.ticks.insert(key, claim);
        let state = inner.entries.entry(entry.to_owned()).or_default();
        state.last_tick = Some(state.last_tick.map_or(tick, |t| t.max(tick)));
        Ok(taken)
    }

    async fn finish_tick(
        &self,
        entry: &str,
        tick: i64,
        _owner: &str,
        _ttl: Duration,
    ) -> Result<()> {
        self.lock()
            .ticks
            .insert((entry.to_owned(), tick), TickMark::Done);
        Ok(())
    }

    async fn release_tick(&self, entry: &str, tick: i64, owner: &str) -> Result<()> {
        let mut inner = self.lock();
        let key = (entry.to_owned(), tick);
        if matches!(inner.ticks.get(&key), Some(TickMark::Claim { owner: o, .. }) if o == owner) {
            inner.ticks.remove(&key);
        }
        Ok(())
    }

    async fn entry(&self, entry: &str) -> Result<EntryState> {
        Ok(self.lock().entries.get(entry).copied().unwrap_or_default())
    }

    async fn set_last_run(&self, entry: &str, tick: i64, run: TaskId) -> Result<()> {
        let mut inner = self.lock();
        let state = inner.entries.entry(entry.to_owned()).or_default();
        if state.last_run.is_none_or(|(t, _)| tick >= t) {
            state.last_run = Some((tick, run));
        }
        Ok(())
    }

    async fn set_pending(&self, entry: &str, tick: i64) -> Result<()> {
        let mut inner = self.lock();
        let state = inner.entries.entry(entry.to_owned()).or_default();
        if state.pending.is_none_or(|t| tick > t) {
            state.pending = Some(tick);
            inner.pending_leases.remove(entry);
        }
        Ok(())
    }

    async fn take_pending(
        &self,
        entry: &str,
        tick: i64,
        owner: &str,
        lease: Duration,
    ) -> Result<bool> {
        let mut inner = self.lock();
        let now = Instant::now();
        if inner.entries.get(entry).and_then(|s| s.pending) != Some(tick) {
            return Ok(false);
        }
        if let Some((t, holder, until)) = inner.pending_leases.get(entry) {
            if *t == tick && holder != owner && *until > now {
                return Ok(false);
            }
        }
        inner
            .pending_leases
            .insert(entry.to_owned(), (tick, owner.to_owned(), now + lease));
        Ok(true)
    }

    async fn clear_pending(&self, entry: &str, tick: i64) -> Result<()> {
        let mut inner = self.lock();
        let state = inner.entries.entry(entry.to_owned()).or_default();
        if state.pending == Some(tick) {
            state.pending = None;
            inner.pending_leases.remove(entry);
        }
        Ok(())
    }
}
