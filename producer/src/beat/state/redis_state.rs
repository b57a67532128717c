//! Beat state in Redis, shared by every replica: each step two replicas
//! could race on is one Lua script (the keys are in the parent module).

use std::time::Duration;

use celeriac_schema::{Error as SchemaError, TaskId};
use celeriac_store::sentinel::StoreConnection;
use redis::Script;

use super::{BeatState, EntryState, TickClaim};
use crate::error::{redact_url, Result};

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
        let (_, conn) = celeriac_store::sentinel::connect(url, tls).await?;
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
