//! What beat replicas share: who took each tick, and per schedule entry the
//! latest tick taken, the latest run and the one run waiting behind it.
//!
//! Redis keys, under the namespace `{ns}`:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{ns}:beat:tick:{flow}:{entry}:{unix secs}` | string | `c:{lease end, unix ms}:{replica}` while a replica holds the tick's claim, `s:{replica}` once the tick was handled (expires after ten periods, at least an hour) |
//! | `{ns}:beat:entry:{flow}:{entry}` | hash | `last_tick`, `last_run`, `last_run_tick`, `pending`, and `pending_owner`, `pending_until` while a replica submits the waiting run (unix seconds, a workflow id, a replica, unix ms) |
//!
//! Every step that two replicas could race on is one Lua script, and every
//! lease is timed by the Redis server's clock, so that replicas whose
//! clocks differ agree on when it ends.

mod memory;
mod redis_state;

pub use memory::MemoryBeatState;
pub use redis_state::RedisBeatState;

use std::time::Duration;

use celeriac_schema::TaskId;

use crate::error::Result;

/// An entry's shared state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EntryState {
    /// The latest tick any replica took (unix seconds).
    pub last_tick: Option<i64>,
    /// The latest run submitted, and its tick.
    pub last_run: Option<(i64, TaskId)>,
    /// A tick waiting for the last run to finish (overlap `queue`).
    pub pending: Option<i64>,
}

/// What [`BeatState::claim_tick`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TickClaim {
    /// Nobody had taken the tick: it is ours until the lease ends.
    Claimed,
    /// The tick is ours: the replica that took it (`from`) let its lease
    /// end without marking the tick handled (it died, or could not reach
    /// the state). Its run may or may not be submitted: submitting again
    /// is safe, a workflow id is created once.
    TakenOver {
        /// The replica whose lease ended.
        from: String,
    },
    /// Another replica (`by`) holds the tick's lease and has not marked it
    /// handled yet: look again later.
    Held {
        /// The replica holding it.
        by: String,
    },
    /// A replica handled the tick (submitted, skipped or queued it).
    Done,
}

impl TickClaim {
    /// Whether the tick is now ours to handle.
    pub fn is_ours(&self) -> bool {
        matches!(self, TickClaim::Claimed | TickClaim::TakenOver { .. })
    }
}

/// Where beat replicas keep their shared state: Redis for clusters
/// ([`RedisBeatState`]), memory for a single process and tests
/// ([`MemoryBeatState`]).
///
/// `entry` is an entry's label (`{flow}:{entry or *}`), `tick` a tick time in
/// unix seconds.
///
/// A tick is taken with a lease ([`BeatState::claim_tick`]) and marked
/// handled once its run is submitted ([`BeatState::finish_tick`]); a lease
/// that ends before that lets another replica take the tick over, so a
/// replica that dies in between loses nothing.
#[async_trait::async_trait]
pub trait BeatState: Send + Sync + std::fmt::Debug + 'static {
    /// Takes tick `tick` of `entry` for `owner` for `lease` unless a
    /// replica handled it or holds a lease on it that has not ended; see
    /// [`TickClaim`]. The tick's mark lives `ttl`. A claim of a tick nobody
    /// had taken raises the entry's `last_tick`.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Schema`] when the state is unreachable.
    async fn claim_tick(
        &self,
        entry: &str,
        tick: i64,
        owner: &str,
        lease: Duration,
        ttl: Duration,
    ) -> Result<TickClaim>;

    /// Marks tick `tick` handled (its run submitted, or the tick skipped or
    /// queued by the overlap policy), for `ttl`: no replica takes it again.
    ///
    /// # Errors
    ///
    /// As [`BeatState::claim_tick`].
    async fn finish_tick(&self, entry: &str, tick: i64, owner: &str, ttl: Duration) -> Result<()>;

    /// Gives back a tick taken by `owner` whose run could not be submitted,
    /// so that it is tried again (by any replica) at once.
    ///
    /// # Errors
    ///
    /// As [`BeatState::claim_tick`].
    async fn release_tick(&self, entry: &str, tick: i64, owner: &str) -> Result<()>;

    /// The entry's shared state.
    ///
    /// # Errors
    ///
    /// As [`BeatState::claim_tick`].
    async fn entry(&self, entry: &str) -> Result<EntryState>;

    /// Records the run submitted for `tick`, unless a later tick's run is
    /// recorded already.
    ///
    /// # Errors
    ///
    /// As [`BeatState::claim_tick`].
    async fn set_last_run(&self, entry: &str, tick: i64, run: TaskId) -> Result<()>;

    /// Makes `tick` the one run waiting for the last run to finish (it
    /// replaces an earlier waiting tick).
    ///
    /// # Errors
    ///
    /// As [`BeatState::claim_tick`].
    async fn set_pending(&self, entry: &str, tick: i64) -> Result<()>;

    /// Takes the waiting tick `tick` for `owner` for `lease`, to submit its
    /// run; `true` when it is ours (it is still waiting, and no other
    /// replica holds a lease on it that has not ended). The tick keeps
    /// waiting until [`BeatState::clear_pending`]: when its submitter dies,
    /// another replica takes it once the lease ends.
    ///
    /// # Errors
    ///
    /// As [`BeatState::claim_tick`].
    async fn take_pending(
        &self,
        entry: &str,
        tick: i64,
        owner: &str,
        lease: Duration,
    ) -> Result<bool>;

    /// The waiting tick `tick`'s run is submitted: it waits no more (unless
    /// a later tick replaced it already).
    ///
    /// # Errors
    ///
    /// As [`BeatState::claim_tick`].
    async fn clear_pending(&self, entry: &str, tick: i64) -> Result<()>;
}
