//! The Lua scripts that make each store step atomic in Redis.
//!
//! Every script that writes a record starts with [`APPLY`], the Redis twin
//! of `TaskRecord::apply`: the same rules, checked against the in-memory
//! store by the tests. An update travels as 12 arguments starting at
//! `base` (see `UpdateArgs` in the parent module).

/// `apply(rec, hist, ttl_ms, chan, base)`: appends the history entry,
/// applies the state rules, refreshes the TTLs and publishes final states.
pub const APPLY: &str = r#"
local function apply(rec, hist, ttl, chan, b)
  local state, attempt, at = ARGV[b], ARGV[b+1], ARGV[b+2]
  local worker, ikey, wf = ARGV[b+3], ARGV[b+4], ARGV[b+5]
  local task, queue = ARGV[b+6], ARGV[b+7]
  local has_err, err_type, err_msg = ARGV[b+8], ARGV[b+9], ARGV[b+10]
  local entry, has_result, result = ARGV[b+11], ARGV[b+12], ARGV[b+13]
  if redis.call('RPUSH', hist, entry) > 100 then
    redis.call('LTRIM', hist, -100, -1)
  end
  redis.call('PEXPIRE', hist, ttl)
  local f = {'task', task, 'queue', queue}
  if ikey ~= '' then f[#f+1] = 'key'; f[#f+1] = ikey end
  if wf ~= '' then f[#f+1] = 'wf'; f[#f+1] = wf end
  if state == 'created' or state == 'queued' then
    redis.call('HSETNX', rec, state .. '_at', at)
    local cur = redis.call('HGET', rec, 'state')
    if cur and cur ~= 'created' and cur ~= 'queued' then
      redis.call('HSET', rec, unpack(f))
      redis.call('PEXPIRE', rec, ttl)
      return 0
    end
  end
  f[#f+1] = 'state'; f[#f+1] = state
  f[#f+1] = 'attempt'; f[#f+1] = attempt
  if worker ~= '' then f[#f+1] = 'worker'; f[#f+1] = worker end
  local del = {}
  local final = (state == 'succeeded' or state == 'failed' or state == 'skipped' or state == 'revoked')
  if state == 'started' then
    redis.call('HINCRBY', rec, 'runs', 1)
    f[#f+1] = 'started_at'; f[#f+1] = at
    del[#del+1] = 'finished_at'
  elseif final then
    f[#f+1] = 'finished_at'; f[#f+1] = at
  end
  if has_err == '1' then
    f[#f+1] = 'err_type'; f[#f+1] = err_type
    f[#f+1] = 'err_msg'; f[#f+1] = err_msg
  end
  if state == 'succeeded' then
    del[#del+1] = 'err_type'; del[#del+1] = 'err_msg'
    if has_result == '1' then
      f[#f+1] = 'result'; f[#f+1] = result
    else
      del[#del+1] = 'result'
    end
  end
  redis.call('HSET', rec, unpack(f))
  if #del > 0 then redis.call('HDEL', rec, unpack(del)) end
  redis.call('PEXPIRE', rec, ttl)
  if final then redis.call('PUBLISH', chan, state) end
  return 1
end
"#;

/// KEYS: rec, hist. ARGV: ttl_ms, chan, update.
pub const RECORD: &str = r#"
return apply(KEYS[1], KEYS[2], ARGV[1], ARGV[2], 3)
"#;

/// KEYS: claim, rec, hist. ARGV: key_ttl_ms, stale_ms, record prefix,
/// task id, result ttl_ms, chan, update. Returns {0, ''} when claimed, or
/// {1, first id, republish}.
pub const CLAIM: &str = r#"
local existing = redis.call('GET', KEYS[1])
if not existing then
  redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[1])
  apply(KEYS[2], KEYS[3], ARGV[5], ARGV[6], 7)
  return {0, '', 0}
end
local rec = ARGV[3] .. existing
local st = redis.call('HMGET', rec, 'state', 'created_at')
local now = tonumber(ARGV[9])
if st[1] == 'created' and st[2] and now - tonumber(st[2]) > tonumber(ARGV[2]) then
  redis.call('HSET', rec, 'created_at', ARGV[9])
  return {1, existing, 1}
end
return {1, existing, 0}
"#;

/// KEYS: done, lease, rec, hist. ARGV: token, lease_ms, ttl_ms, chan,
/// update. Returns {0, ''} to run, {1, task id} when the key succeeded,
/// {2, lease ms left} when busy.
pub const BEGIN: &str = r#"
local done = redis.call('GET', KEYS[1])
if done then return {1, done} end
if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {2, tostring(redis.call('PTTL', KEYS[2]))}
end
apply(KEYS[3], KEYS[4], ARGV[3], ARGV[4], 5)
return {0, ''}
"#;

/// KEYS: lease. ARGV: token, lease_ms. Returns 1 when renewed.
pub const RENEW: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"#;

/// KEYS: done, lease, rec, hist. ARGV: token, key_ttl_ms, ttl_ms, chan,
/// task id, update.
pub const FINISH: &str = r#"
if ARGV[6] == 'succeeded' then
  redis.call('SET', KEYS[1], ARGV[5], 'PX', ARGV[2])
end
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('DEL', KEYS[2])
end
apply(KEYS[3], KEYS[4], ARGV[3], ARGV[4], 6)
return 1
"#;

/// KEYS: claim. ARGV: task id. Deletes the claim if it is bound to the id.
pub const UNCLAIM: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return 1
"#;
