//! Resource pools in Redis: a distributed semaphore per pool whose
//! holders hold units under an expiring lease.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{ns}:pools` | hash | pool name → capacity (units) |
//! | `{ns}:pool:{name}` | sorted set | holders (`{task id}/{run}`), scored by their lease expiry (Redis time, ms) |
//! | `{ns}:pool:{name}:u` | hash | holder → units held |
//!
//! Every script first drops the holders whose lease ran out (a crashed
//! worker's units come back this way), using Redis's clock.

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::Duration;

use celeriac_schema::store::{Bucket, Grant, Policy, PoolGrant, PoolStatus};
use redis::Script;

use super::{unavailable, RedisStore, StoreResult};

/// Drops the expired holders of the pool whose keys are `z` and `u`.
const PRUNE: &str = r#"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function prune(z, u, now)
  local gone = redis.call('ZRANGEBYSCORE', z, '-inf', now)
  for _, h in ipairs(gone) do
    redis.call('ZREM', z, h)
    redis.call('HDEL', u, h)
  end
end
"#;

/// KEYS: the capacities hash, then per pool its holders and units.
/// ARGV: holder, lease (ms), then per pool: name, units. All or nothing:
/// `{0}` granted, `{1, pool, ms until its first lease ends}` full,
/// `{2, pool, capacity or -1}` unknown or too small.
const ACQUIRE: &str = r#"
local now = now_ms()
local holder = ARGV[1]
local lease = tonumber(ARGV[2])
local n = (#ARGV - 2) / 2
for i = 1, n do
  local name = ARGV[1 + 2 * i]
  local units = tonumber(ARGV[2 + 2 * i])
  local z = KEYS[2 * i]
  local u = KEYS[2 * i + 1]
  local cap = tonumber(redis.call('HGET', KEYS[1], name))
  if cap == nil or cap < units then
    return {2, name, cap or -1}
  end
  prune(z, u, now)
  local used = 0
  local held = redis.call('HGETALL', u)
  for j = 1, #held, 2 do
    if held[j] ~= holder then
      used = used + tonumber(held[j + 1])
    end
  end
  if used + units > cap then
    local first = redis.call('ZRANGE', z, 0, 0, 'WITHSCORES')
    local wait = 0
    if #first > 0 then
      wait = math.max(0, tonumber(first[2]) - now)
    end
    return {1, name, wait}
  end
end
for i = 1, n do
  redis.call('ZADD', KEYS[2 * i], now + lease, holder)
  redis.call('HSET', KEYS[2 * i + 1], holder, ARGV[2 + 2 * i])
end
return {0, '', 0}
"#;

/// KEYS: per pool its holders and units. ARGV: holder, lease (ms).
/// Extends a live lease; 1 when the holder still held every pool.
const RENEW: &str = r#"
local now = now_ms()
local all = 1
for i = 1, #KEYS, 2 do
  prune(KEYS[i], KEYS[i + 1], now)
  if redis.call('ZADD', KEYS[i], 'XX', 'CH', now + tonumber(ARGV[2]), ARGV[1]) == 0 then
    if redis.call('ZSCORE', KEYS[i], ARGV[1]) == false then
      all = 0
    end
  end
end
return all
"#;

/// KEYS: per pool its holders and units. ARGV: the pool names. Per pool:
/// units in use and live holders.
const STATUS: &str = r#"
local now = now_ms()
local out = {}
for i = 1, #KEYS, 2 do
  prune(KEYS[i], KEYS[i + 1], now)
  local used = 0
  local held = redis.call('HGETALL', KEYS[i + 1])
  for j = 2, #held, 2 do
    used = used + tonumber(held[j])
  end
  table.insert(out, used)
  table.insert(out, #held / 2)
end
return out
"#;

static ACQUIRE_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{PRUNE}{ACQUIRE}")));
static RENEW_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(&format!("{PRUNE}{RENEW}")));
static STATUS_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(&format!("{PRUNE}{STATUS}")));

impl RedisStore {
    fn pools_key(&self) -> String {
        format!("{}pools", self.prefix())
    }

    /// The holders and units keys of a pool.
    fn pool_keys(&self, name: &str) -> [String; 2] {
        let base = format!("{}pool:{name}", self.prefix());
        let units = format!("{base}:u");
        [base, units]
    }
}

fn lease_ms(lease: Duration) -> u64 {
    (lease.as_millis() as u64).max(1)
}

#[async_trait::async_trait]
impl Policy for RedisStore {
    async fn take_tokens(&self, buckets: &[Bucket], want: u32) -> StoreResult<Grant> {
        self.take_tokens_redis(buckets, want).await
    }

    async fn acquire_pools(
        &self,
        holder: &str,
        needs: &BTreeMap<String, u32>,
        lease: Duration,
    ) -> StoreResult<PoolGrant> {
        if needs.is_empty() {
            return Ok(PoolGrant::Granted);
        }
        let mut invocation = ACQUIRE_SCRIPT.prepare_invoke();
        invocation
            .key(self.pools_key())
            .arg(holder)
            .arg(lease_ms(lease));
        for (name, units) in needs {
            let [holders, held] = self.pool_keys(name);
            invocation.key(holders).key(held).arg(name).arg(*units);
        }
        let mut conn = self.inner.conn.clone();
        let (code, pool, value): (u8, String, i64) = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable("acquire pools", &self.inner.url))?;
        Ok(match code {
            0 => PoolGrant::Granted,
            1 => PoolGrant::Full {
                pool,
                retry_after: Duration::from_millis(value.max(0) as u64),
            },
            _ => PoolGrant::Unknown {
                pool,
                capacity: u32::try_from(value).ok(),
            },
        })
    }

    async fn renew_pools(
        &self,
        holder: &str,
        pools: &BTreeMap<String, u32>,
        lease: Duration,
    ) -> StoreResult<bool> {
        if pools.is_empty() {
            return Ok(true);
        }
        let mut invocation = RENEW_SCRIPT.prepare_invoke();
        invocation.arg(holder).arg(lease_ms(lease));
        for name in pools.keys() {
            let [holders, held] = self.pool_keys(name);
            invocation.key(holders).key(held);
        }
        let mut conn = self.inner.conn.clone();
        let all: u8 = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable("renew pools", &self.inner.url))?;
        Ok(all == 1)
    }

    async fn release_pools(&self, holder: &str, pools: &BTreeMap<String, u32>) -> StoreResult<()> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        for name in pools.keys() {
            let [holders, held] = self.pool_keys(name);
            pipe.zrem(holders, holder).ignore();
            pipe.hdel(held, holder).ignore();
        }
        let mut conn = self.inner.conn.clone();
        pipe.query_async::<()>(&mut conn)
            .await
            .map_err(unavailable("release pools", &self.inner.url))
    }

    async fn set_pool(
        &self,
        name: &str,
        capacity: Option<u32>,
        if_absent: bool,
    ) -> StoreResult<bool> {
        let key = self.pools_key();
        let mut conn = self.inner.conn.clone();
        let mut cmd = match (capacity, if_absent) {
            (Some(_), true) => redis::cmd("HSETNX"),
            (Some(_), false) => redis::cmd("HSET"),
            (None, _) => redis::cmd("HDEL"),
        };
        cmd.arg(&key).arg(name);
        if let Some(capacity) = capacity {
            cmd.arg(capacity);
        }
        let changed: i64 = cmd
            .query_async(&mut conn)
            .await
            .map_err(unavailable("set pool", &self.inner.url))?;
        // HSET answers 0 when it replaced a value: a change all the same.
        Ok(changed == 1 || (capacity.is_some() && !if_absent))
    }

    async fn pools(&self) -> StoreResult<Vec<PoolStatus>> {
        let mut conn = self.inner.conn.clone();
        let capacities: BTreeMap<String, u32> = redis::cmd("HGETALL")
            .arg(self.pools_key())
            .query_async(&mut conn)
            .await
            .map_err(unavailable("list pools", &self.inner.url))?;
        if capacities.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = STATUS_SCRIPT.prepare_invoke();
        for name in capacities.keys() {
            let [holders, held] = self.pool_keys(name);
            invocation.key(holders).key(held);
        }
        let counts: Vec<u32> = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable("list pools", &self.inner.url))?;
        Ok(capacities
            .into_iter()
            .zip(counts.chunks(2))
            .map(|((name, capacity), c)| PoolStatus {
                name,
                capacity,
                in_use: c.first().copied().unwrap_or(0),
                holders: c.get(1).copied().unwrap_or(0),
            })
            .collect())
    }
}
