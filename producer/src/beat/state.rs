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

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::redis_store::sentinel::StoreConnection;
use celeriac_schema::{Error as SchemaError, TaskId};
use redis::Script;

use crate::error::{redact_url, Result};

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

/// The Redis server's clock in unix ms, for leases every replica agrees on.
const NOW_MS: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
";

/// KEYS: tick, entry. ARGV: owner, lease_ms, ttl_ms, tick. Returns
/// {1, ''} claimed, {3, previous owner} taken over, {2, holder} held,
/// {0, ''} done. A value in no known form (an older release's plain owner)
/// counts as done.
const CLAIM_TICK: &str = r"
local cur = redis.call('GET', KEYS[1])
local claim = 'c:' .. (now + tonumber(ARGV[2])) .. ':' .. ARGV[1]
if not cur then
  redis.call('SET', KEYS[1], claim, 'PX', ARGV[3])
  local last = redis.call('HGET', KEYS[2], 'last_tick')
  if (not last) or tonumber(ARGV[4]) > tonumber(last) then
    redis.call('HSET', KEYS[2], 'last_tick', ARGV[4])
  end
  return {1, ''}
end
local until_ms, holder = string.match(cur, '^c:(%d+):(.*)$')
if not until_ms then return {0, ''} end
if tonumber(until_ms) > now then return {2, holder} end
redis.call('SET', KEYS[1], claim, 'KEEPTTL')
return {3, holder}
";

/// KEYS: tick. ARGV: owner, ttl_ms.
const FINISH_TICK: &str = r"
redis.call('SET', KEYS[1], 's:' .. ARGV[1], 'PX', ARGV[2])
return 0
";

/// KEYS: tick. ARGV: owner. Deletes the tick's claim if `owner` holds it.
const RELEASE_TICK: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur and string.match(cur, '^c:%d+:(.*)$') == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return 0
";

const SET_LAST_RUN: &str = r"
local last = redis.call('HGET', KEYS[1], 'last_run_tick')
if (not last) or tonumber(ARGV[1]) >= tonumber(last) then
  redis.call('HSET', KEYS[1], 'last_run_tick', ARGV[1], 'last_run', ARGV[2])
end
return 0
";

const SET_PENDING: &str = r"
local last = redis.call('HGET', KEYS[1], 'pending')
if (not last) or tonumber(ARGV[1]) > tonumber(last) then
  redis.call('HSET', KEYS[1], 'pending', ARGV[1])
  redis.call('HDEL', KEYS[1], 'pending_owner', 'pending_until')
end
return 0
";

/// KEYS: entry. ARGV: tick, owner, lease_ms. Returns 1 when taken.
const TAKE_PENDING: &str = r"
if redis.call('HGET', KEYS[1], 'pending') ~= ARGV[1] then return 0 end
local held = redis.call('HMGET', KEYS[1], 'pending_owner', 'pending_until')
if held[1] and held[1] ~= ARGV[2] and tonumber(held[2] or '0') > now then return 0 end
redis.call('HSET', KEYS[1], 'pending_owner', ARGV[2], 'pending_until', now + tonumber(ARGV[3]))
return 1
";

/// KEYS: entry. ARGV: tick.
const CLEAR_PENDING: &str = r"
if redis.call('HGET', KEYS[1], 'pending') == ARGV[1] then
  redis.call('HDEL', KEYS[1], 'pending', 'pending_owner', 'pending_until')
end
return 0
";

/// Beat state in Redis, shared by every replica of a namespace.
///
/// # Examples
///
/// ```no_run
/// # async fn demo() -> celeriac_producer::Result<()> {
/// use celeriac_producer::beat::RedisBeatState;
///
/// let state = RedisBeatState::connect("redis://127.0.0.1:6379", "celeriac").await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisBeatState {
    url: String,
    prefix: String,
    conn: StoreConnection,
    claim_tick: std::sync::Arc<Script>,
    finish_tick: std::sync::Arc<Script>,
    release_tick: std::sync::Arc<Script>,
    set_last_run: std::sync::Arc<Script>,
    set_pending: std::sync::Arc<Script>,
    take_pending: std::sync::Arc<Script>,
    clear_pending: std::sync::Arc<Script>,
}

impl std::fmt::Debug for RedisBeatState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBeatState")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisBeatState {
    /// Connects to Redis at `url`, keeping keys under `namespace`.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Schema`] (store unavailable) when Redis cannot be
    /// reached within five seconds or the URL is invalid.
    pub async fn connect(url: &str, namespace: &str) -> Result<RedisBeatState> {
        Self::connect_with_tls(url, namespace, &crate::tls::TlsOptions::default()).await
    }

    /// [`RedisBeatState::connect`] with TLS settings for a `rediss://` URL
    /// (see [`crate::RedisStore::connect_with_tls`]).
    ///
    /// # Errors
    ///
    /// As [`RedisBeatState::connect`], also for unusable TLS files and a
    /// failed TLS handshake.
    pub async fn connect_with_tls(
        url: &str,
        namespace: &str,
        tls: &crate::tls::TlsOptions,
    ) -> Result<RedisBeatState> {
        let (_, conn) = crate::redis_store::sentinel::connect(url, tls).await?;
        let redacted = redact_url(url);
        let script = |body: &str| std::sync::Arc::new(Script::new(body));
        Ok(RedisBeatState {
            url: redacted,
            prefix: format!("{namespace}:beat:"),
            conn,
            claim_tick: script(&format!("{NOW_MS}{CLAIM_TICK}")),
            finish_tick: script(FINISH_TICK),
            release_tick: script(RELEASE_TICK),
            set_last_run: script(SET_LAST_RUN),
            set_pending: script(SET_PENDING),
            take_pending: script(&format!("{NOW_MS}{TAKE_PENDING}")),
            clear_pending: script(CLEAR_PENDING),
        })
    }

    fn tick_key(&self, entry: &str, tick: i64) -> String {
        format!("{}tick:{entry}:{tick}", self.prefix)
    }

    fn entry_key(&self, entry: &str) -> String {
        format!("{}entry:{entry}", self.prefix)
    }

    fn unavailable(&self, op: &'static str) -> impl Fn(redis::RedisError) -> crate::Error + '_ {
        move |e| {
            SchemaError::StoreUnavailable {
                op,
                message: format!("{e} ({})", self.url),
            }
            .into()
        }
    }

    async fn invoke(
        &self,
        op: &'static str,
        script: &Script,
        keys: &[String],
        args: &[String],
    ) -> Result<i64> {
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(key);
        }
        for arg in args {
            invocation.arg(arg);
        }
        let mut conn = self.conn.clone();
        invocation
            .invoke_async(&mut conn)
            .await
            .map_err(self.unavailable(op))
    }
}

#[async_trait::async_trait]
impl BeatState for RedisBeatState {
    async fn claim_tick(
        &self,
        entry: &str,
        tick: i64,
        owner: &str,
        lease: Duration,
        ttl: Duration,
    ) -> Result<TickClaim> {
        let mut invocation = self.claim_tick.prepare_invoke();
        invocation
            .key(self.tick_key(entry, tick))
            .key(self.entry_key(entry))
            .arg(owner)
            .arg(millis(lease))
            .arg(millis(ttl))
            .arg(tick);
        let mut conn = self.conn.clone();
        let (code, who): (i64, String) = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(self.unavailable("claiming a beat tick"))?;
        Ok(match code {
            1 => TickClaim::Claimed,
            2 => TickClaim::Held { by: who },
            3 => TickClaim::TakenOver { from: who },
            _ => TickClaim::Done,
        })
    }

    async fn finish_tick(&self, entry: &str, tick: i64, owner: &str, ttl: Duration) -> Result<()> {
        self.invoke(
            "marking a beat tick handled",
            &self.finish_tick,
            &[self.tick_key(entry, tick)],
            &[owner.to_owned(), millis(ttl).to_string()],
        )
        .await
        .map(drop)
    }

    async fn release_tick(&self, entry: &str, tick: i64, owner: &str) -> Result<()> {
        self.invoke(
            "releasing a beat tick",
            &self.release_tick,
            &[self.tick_key(entry, tick)],
            &[owner.to_owned()],
        )
        .await
        .map(drop)
    }

    async fn entry(&self, entry: &str) -> Result<EntryState> {
        let mut conn = self.conn.clone();
        let (last_tick, last_run, last_run_tick, pending): (
            Option<i64>,
            Option<String>,
            Option<i64>,
            Option<i64>,
        ) = redis::cmd("HMGET")
            .arg(self.entry_key(entry))
            .arg(&["last_tick", "last_run", "last_run_tick", "pending"])
            .query_async(&mut conn)
            .await
            .map_err(self.unavailable("reading beat state"))?;
        let last_run = match (last_run_tick, last_run) {
            (Some(tick), Some(id)) => {
                let id = id.parse::<TaskId>().map_err(|e| SchemaError::StoreData {
                    what: "beat last run",
                    message: e.to_string(),
                })?;
                Some((tick, id))
            }
            _ => None,
        };
        Ok(EntryState {
            last_tick,
            last_run,
            pending,
        })
    }

    async fn set_last_run(&self, entry: &str, tick: i64, run: TaskId) -> Result<()> {
        self.invoke(
            "recording a beat run",
            &self.set_last_run,
            &[self.entry_key(entry)],
            &[tick.to_string(), run.to_string()],
        )
        .await
        .map(drop)
    }

    async fn set_pending(&self, entry: &str, tick: i64) -> Result<()> {
        self.invoke(
            "queueing a beat run",
            &self.set_pending,
            &[self.entry_key(entry)],
            &[tick.to_string()],
        )
        .await
        .map(drop)
    }

    async fn take_pending(
        &self,
        entry: &str,
        tick: i64,
        owner: &str,
        lease: Duration,
    ) -> Result<bool> {
        let taken = self
            .invoke(
                "taking a queued beat run",
                &self.take_pending,
                &[self.entry_key(entry)],
                &[
                    tick.to_string(),
                    owner.to_owned(),
                    millis(lease).to_string(),
                ],
            )
            .await?;
        Ok(taken == 1)
    }

    async fn clear_pending(&self, entry: &str, tick: i64) -> Result<()> {
        self.invoke(
            "clearing a queued beat run",
            &self.clear_pending,
            &[self.entry_key(entry)],
            &[tick.to_string()],
        )
        .await
        .map(drop)
    }
}

/// A duration in whole milliseconds, at least one (Redis refuses `PX 0`).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}
