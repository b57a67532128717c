//! What beat replicas share: who took each tick, and per schedule entry the
//! latest tick taken, the latest run and the one run waiting behind it.
//!
//! Redis keys, under the namespace `{ns}`:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{ns}:beat:tick:{flow}:{entry}:{unix secs}` | string | the replica that took the tick (expires after ten periods, at least an hour) |
//! | `{ns}:beat:entry:{flow}:{entry}` | hash | `last_tick`, `last_run`, `last_run_tick`, `pending` (unix seconds or a workflow id) |
//!
//! Every step that two replicas could race on is one Lua script.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use celeriac_schema::{Error as SchemaError, TaskId};
use redis::aio::ConnectionManager;
use redis::Script;

use crate::error::{redact_url, Result};

/// How long a state command may take before it counts as a failure.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

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

/// Where beat replicas keep their shared state: Redis for clusters
/// ([`RedisBeatState`]), memory for a single process and tests
/// ([`MemoryBeatState`]).
///
/// `entry` is an entry's label (`{flow}:{entry or *}`), `tick` a tick time in
/// unix seconds.
#[async_trait::async_trait]
pub trait BeatState: Send + Sync + std::fmt::Debug + 'static {
    /// Takes tick `tick` of `entry` for `owner` unless a replica took it
    /// already; `true` when it is ours. Raises the entry's `last_tick`.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Schema`] when the state is unreachable.
    async fn claim_tick(&self, entry: &str, tick: i64, owner: &str, ttl: Duration) -> Result<bool>;

    /// Gives back a tick taken by `owner` whose run could not be submitted,
    /// so that it is tried again.
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

    /// Takes the waiting tick `tick` away; `true` for the one caller that
    /// did, which then submits its run.
    ///
    /// # Errors
    ///
    /// As [`BeatState::claim_tick`].
    async fn take_pending(&self, entry: &str, tick: i64) -> Result<bool>;
}

/// Beat state in memory: for one beat process, and tests.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use celeriac_producer::beat::{BeatState, MemoryBeatState};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let state = MemoryBeatState::default();
/// let ttl = Duration::from_secs(60);
/// assert!(state.claim_tick("nightly:*", 120, "a", ttl).await?);
/// assert!(!state.claim_tick("nightly:*", 120, "b", ttl).await?);
/// assert_eq!(state.entry("nightly:*").await?.last_tick, Some(120));
/// # Ok::<(), celeriac_producer::Error>(()) }).unwrap();
/// ```
#[derive(Debug, Default)]
pub struct MemoryBeatState {
    inner: Mutex<MemoryInner>,
}

#[derive(Debug, Default)]
struct MemoryInner {
    ticks: HashMap<(String, i64), String>,
    entries: HashMap<String, EntryState>,
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
        _ttl: Duration,
    ) -> Result<bool> {
        let mut inner = self.lock();
        let key = (entry.to_owned(), tick);
        if inner.ticks.contains_key(&key) {
            return Ok(false);
        }
        inner.ticks.insert(key, owner.to_owned());
        let state = inner.entries.entry(entry.to_owned()).or_default();
        state.last_tick = Some(state.last_tick.map_or(tick, |t| t.max(tick)));
        Ok(true)
    }

    async fn release_tick(&self, entry: &str, tick: i64, owner: &str) -> Result<()> {
        let mut inner = self.lock();
        let key = (entry.to_owned(), tick);
        if inner.ticks.get(&key).map(String::as_str) == Some(owner) {
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
        }
        Ok(())
    }

    async fn take_pending(&self, entry: &str, tick: i64) -> Result<bool> {
        let mut inner = self.lock();
        let state = inner.entries.entry(entry.to_owned()).or_default();
        if state.pending == Some(tick) {
            state.pending = None;
            return Ok(true);
        }
        Ok(false)
    }
}

const CLAIM_TICK: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local last = redis.call('HGET', KEYS[2], 'last_tick')
  if (not last) or tonumber(ARGV[3]) > tonumber(last) then
    redis.call('HSET', KEYS[2], 'last_tick', ARGV[3])
  end
  return 1
end
return 0
";

const RELEASE_TICK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
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
end
return 0
";

const TAKE_PENDING: &str = r"
if redis.call('HGET', KEYS[1], 'pending') == ARGV[1] then
  redis.call('HDEL', KEYS[1], 'pending')
  return 1
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
    conn: ConnectionManager,
    claim_tick: std::sync::Arc<Script>,
    release_tick: std::sync::Arc<Script>,
    set_last_run: std::sync::Arc<Script>,
    set_pending: std::sync::Arc<Script>,
    take_pending: std::sync::Arc<Script>,
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
        let redacted = redact_url(url);
        let client = redis::Client::open(url).map_err(|e| SchemaError::StoreUnavailable {
            op: "connect",
            message: format!("invalid Redis URL {redacted}: {e}"),
        })?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(RESPONSE_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        let conn = tokio::time::timeout(
            RESPONSE_TIMEOUT,
            ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|_| SchemaError::StoreUnavailable {
            op: "connect",
            message: format!("no answer from {redacted} within {RESPONSE_TIMEOUT:?}"),
        })?
        .map_err(|e| SchemaError::StoreUnavailable {
            op: "connect",
            message: format!("{e} ({redacted})"),
        })?;
        let script = |body: &str| std::sync::Arc::new(Script::new(body));
        Ok(RedisBeatState {
            url: redacted,
            prefix: format!("{namespace}:beat:"),
            conn,
            claim_tick: script(CLAIM_TICK),
            release_tick: script(RELEASE_TICK),
            set_last_run: script(SET_LAST_RUN),
            set_pending: script(SET_PENDING),
            take_pending: script(TAKE_PENDING),
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
    async fn claim_tick(&self, entry: &str, tick: i64, owner: &str, ttl: Duration) -> Result<bool> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let taken = self
            .invoke(
                "claiming a beat tick",
                &self.claim_tick,
                &[self.tick_key(entry, tick), self.entry_key(entry)],
                &[owner.to_owned(), ttl_ms.to_string(), tick.to_string()],
            )
            .await?;
        Ok(taken == 1)
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

    async fn take_pending(&self, entry: &str, tick: i64) -> Result<bool> {
        let taken = self
            .invoke(
                "taking a queued beat run",
                &self.take_pending,
                &[self.entry_key(entry)],
                &[tick.to_string()],
            )
            .await?;
        Ok(taken == 1)
    }
}
