//! Token buckets in Redis, for cluster-wide rate limits.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{ns}:rl:task:{name}` | hash | the run-time bucket of a task name: `t` tokens (a float), `ts` when refilled (Redis time, ms) |
//! | `{ns}:rl:tenant:{tenant}` | hash | the run-time bucket of a tenant, likewise |
//! | `{ns}:rl:admit:{key}` | hash | a producer's admission bucket, likewise |
//!
//! A bucket expires once it would be full again, so idle names leave
//! nothing behind. The clock is Redis's (`TIME`), the same for every
//! worker.

use std::sync::LazyLock;
use std::time::Duration;

use celeriac_schema::store::{burst, Bucket, Grant};
use redis::Script;

use super::{unavailable, RedisStore, StoreResult};

/// KEYS: the buckets. ARGV: want, then per bucket: count, period (ms),
/// burst. Refills every bucket by the time elapsed, takes the same number
/// of tokens (up to `want`) from all of them, and returns that number and
/// the milliseconds until every bucket holds a token again.
const TAKE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local want = tonumber(ARGV[1])
local levels = {}
local granted = want
for i = 1, #KEYS do
  local count = tonumber(ARGV[3 * i - 1])
  local per = tonumber(ARGV[3 * i])
  local burst = tonumber(ARGV[3 * i + 1])
  local s = redis.call('HMGET', KEYS[i], 't', 'ts')
  local tokens = tonumber(s[1])
  local ts = tonumber(s[2])
  if tokens == nil or ts == nil then
    tokens = burst
    ts = now
  end
  if now > ts then
    tokens = math.min(burst, tokens + (now - ts) * count / per)
  end
  levels[i] = tokens
  granted = math.min(granted, math.floor(tokens))
end
local wait = 0
for i = 1, #KEYS do
  local count = tonumber(ARGV[3 * i - 1])
  local per = tonumber(ARGV[3 * i])
  local burst = tonumber(ARGV[3 * i + 1])
  local left = levels[i] - granted
  if left < 1 then
    wait = math.max(wait, math.ceil((1 - left) * per / count))
  end
  redis.call('HSET', KEYS[i], 't', tostring(left), 'ts', tostring(now))
  redis.call('PEXPIRE', KEYS[i], math.ceil(per * burst / count) + 1000)
end
return {granted, wait}
"#;

static TAKE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(TAKE));

impl RedisStore {
    fn bucket_key(&self, bucket: &Bucket) -> String {
        format!("{}rl:{}", self.prefix(), bucket.key)
    }

    /// [`celeriac_schema::store::Policy::take_tokens`] in one script call.
    pub(super) async fn take_tokens_redis(
        &self,
        buckets: &[Bucket],
        want: u32,
    ) -> StoreResult<Grant> {
        if buckets.is_empty() {
            return Ok(Grant {
                granted: want.max(1),
                retry_after: Duration::ZERO,
            });
        }
        let mut invocation = TAKE_SCRIPT.prepare_invoke();
        invocation.arg(want.max(1));
        for bucket in buckets {
            invocation
                .key(self.bucket_key(bucket))
                .arg(bucket.rate.count)
                .arg(bucket.rate.per.as_millis().max(1) as u64)
                .arg(burst(bucket.rate));
        }
        let mut conn = self.inner.conn.clone();
        let (granted, wait_ms): (u32, u64) = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable("take tokens", &self.inner.url))?;
        Ok(Grant {
            granted,
            retry_after: Duration::from_millis(wait_ms),
        })
    }
}
