//! The Lua scripts that make each store step atomic in Redis.
//!
//! Every script that writes a record starts with [`APPLY`], the Redis twin
//! of `TaskRecord::apply`: the same rules, checked against the in-memory
//! store by the tests. An update travels as 12 arguments starting at
//! `base` (see `UpdateArgs` in the parent module).

/// `apply(rec, ttl_ms, chan, base)`: appends the history entry, applies
/// the state rules, refreshes the TTL and publishes final states. The
/// record is one hash; its history is the field `h`, MessagePack
/// transitions one after another (at most 100, counted in `hn`). An empty
/// field means "none".
pub const APPLY: &str = r#"
local function apply(rec, ttl, chan, b)
  local state, attempt, at = ARGV[b], ARGV[b+1], ARGV[b+2]
  local worker, ikey, wf = ARGV[b+3], ARGV[b+4], ARGV[b+5]
  local task, queue = ARGV[b+6], ARGV[b+7]
  local has_err, err_type, err_msg = ARGV[b+8], ARGV[b+9], ARGV[b+10]
  local entry, has_result, result = ARGV[b+11], ARGV[b+12], ARGV[b+13]
  local cur = redis.call('HMGET', rec, 'state', 'runs', 'h', 'hn', 'created_at', 'queued_at')
  local h, hn = cur[3] or '', tonumber(cur[4] or '0')
  if hn >= 100 then
    local entries = {cmsgpack.unpack(h)}
    h = ''
    for i = hn - 98, #entries do h = h .. cmsgpack.pack(entries[i]) end
    hn = 99
  end
  local f = {'task', task, 'queue', queue}
  if ikey ~= '' then f[#f+1] = 'key'; f[#f+1] = ikey end
  if wf ~= '' then f[#f+1] = 'wf'; f[#f+1] = wf end
  if state == 'created' and not cur[5] then f[#f+1] = 'created_at'; f[#f+1] = at end
  if state == 'queued' and not cur[6] then f[#f+1] = 'queued_at'; f[#f+1] = at end
  local applied = 1
  if (state == 'created' or state == 'queued') and cur[1] and cur[1] ~= 'created' and cur[1] ~= 'queued' then
    applied = 0
  else
    f[#f+1] = 'h'; f[#f+1] = h .. entry
    f[#f+1] = 'hn'; f[#f+1] = hn + 1
    f[#f+1] = 'state'; f[#f+1] = state
    f[#f+1] = 'attempt'; f[#f+1] = attempt
    if worker ~= '' then f[#f+1] = 'worker'; f[#f+1] = worker end
    if state == 'started' then
      f[#f+1] = 'runs'; f[#f+1] = (tonumber(cur[2]) or 0) + 1
      f[#f+1] = 'started_at'; f[#f+1] = at
      f[#f+1] = 'finished_at'; f[#f+1] = ''
    elseif state == 'succeeded' or state == 'failed' or state == 'skipped' or state == 'revoked' then
      f[#f+1] = 'finished_at'; f[#f+1] = at
    end
    if has_err == '1' then
      f[#f+1] = 'err_type'; f[#f+1] = err_type
      f[#f+1] = 'err_msg'; f[#f+1] = err_msg
    end
    if state == 'succeeded' then
      f[#f+1] = 'err_type'; f[#f+1] = ''
      f[#f+1] = 'err_msg'; f[#f+1] = ''
      f[#f+1] = 'result'; f[#f+1] = (has_result == '1') and result or ''
    end
  end
  redis.call('HSET', rec, unpack(f))
  -- A record's TTL runs from its last write that matters: its creation,
  -- a producer state, a retry or its end (not each start).
  if not cur[1] or state ~= 'started' then
    redis.call('PEXPIRE', rec, ttl)
  end
  if applied == 1 and (state == 'succeeded' or state == 'failed' or state == 'skipped' or state == 'revoked') then
    redis.call('PUBLISH', chan, state)
  end
  return applied
end
"#;

/// KEYS: one record per update. ARGV: ttl_ms, then for each update its
/// channel and its 14 fields. Applies them in order.
pub const RECORD: &str = r#"
for i = 1, #KEYS do
  local p = 2 + (i - 1) * 15
  apply(KEYS[i], ARGV[1], ARGV[p], p + 1)
end
return #KEYS
"#;

/// Updates per `RECORD` call: enough to amortise the call, few enough that
/// one call never holds Redis for long.
pub const RECORD_BATCH: usize = 200;

/// KEYS: claim, rec. ARGV: key_ttl_ms, stale_ms, record prefix, task id,
/// result ttl_ms, chan, update. Returns {0, '', 0} when claimed, or
/// {1, first id, republish}.
pub const CLAIM: &str = r#"
local existing = redis.call('GET', KEYS[1])
if not existing then
  redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[1])
  apply(KEYS[2], ARGV[5], ARGV[6], 7)
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

/// KEYS: key, rec. ARGV: token, lease_ms, ttl_ms, chan, update. The key
/// holds a run's lease token while it runs and `done:{task id}` once a run
/// succeeded. Returns {0, ''} to run, {1, task id} when the key succeeded,
/// {2, lease ms left} when busy.
pub const BEGIN: &str = r#"
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local v = redis.call('GET', KEYS[1])
  if v and string.sub(v, 1, 5) == 'done:' then return {1, string.sub(v, 6)} end
  return {2, tostring(redis.call('PTTL', KEYS[1]))}
end
apply(KEYS[2], ARGV[3], ARGV[4], 5)
return {0, ''}
"#;

/// KEYS: key. ARGV: token, lease_ms. Returns 1 when renewed.
pub const RENEW: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"#;

/// KEYS: key, rec. ARGV: token, key_ttl_ms, ttl_ms, chan, task id,
/// update. Success turns the key into `done:{task id}` for the key TTL;
/// any other end releases the lease if this run still holds it.
pub const FINISH: &str = r#"
if ARGV[6] == 'succeeded' then
  redis.call('SET', KEYS[1], 'done:' .. ARGV[5], 'PX', ARGV[2])
elseif redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
apply(KEYS[2], ARGV[3], ARGV[4], 6)
return 1
"#;

/// KEYS: claim. ARGV: task id. Deletes the claim if it is bound to the id.
pub const UNCLAIM: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return 1
"#;

/// Closes a workflow after its last node: `finalize(w, chan, now)`.
const FINALIZE: &str = r#"
local function finalize(w, chan, now)
  local failed = tonumber(redis.call('HGET', w, 'failed') or '0')
  local state = 'succeeded'
  if failed > 0 then state = 'failed' end
  redis.call('HSET', w, 'state', state, 'finished_at', now)
  redis.call('PUBLISH', chan, state)
end
"#;

/// KEYS: w, children, pending, status. ARGV: node, ttl_ms, now, chan.
/// Marks the node succeeded once; returns {child, first, ...} for every
/// child whose dependencies all succeeded and that has not finished.
pub fn node_succeeded() -> String {
    format!(
        "{FINALIZE}{}",
        r#"
local node = ARGV[1]
local st = redis.call('HGET', KEYS[4], node)
if st == 'f' or st == 'k' then return {} end
local children = {}
local packed = redis.call('HGET', KEYS[2], node)
if packed then children = cmsgpack.unpack(packed) end
if st ~= 's' then
  redis.call('HSET', KEYS[4], node, 's')
  for _, c in ipairs(children) do redis.call('HINCRBY', KEYS[3], c, -1) end
  if redis.call('HINCRBY', KEYS[1], 'remaining', -1) == 0 then
    finalize(KEYS[1], ARGV[4], ARGV[3])
  end
end
local ready = {}
for _, c in ipairs(children) do
  if tonumber(redis.call('HGET', KEYS[3], c) or '0') <= 0 then
    local cs = redis.call('HGET', KEYS[4], c)
    if not cs or cs == 'w' then
      redis.call('HSET', KEYS[4], c, 'r')
      redis.call('HINCRBY', KEYS[1], 'released', 1)
      ready[#ready+1] = c
      ready[#ready+1] = 1
    elseif cs == 'r' then
      ready[#ready+1] = c
      ready[#ready+1] = 0
    end
  end
end
for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], ARGV[2]) end
return ready
"#
    )
}

/// KEYS: w, children, pending, status. ARGV: node, ttl_ms, now, chan.
/// Marks the node failed and everything downstream skipped; returns the
/// nodes it skipped.
pub fn node_failed() -> String {
    format!(
        "{FINALIZE}{}",
        r#"
local node = ARGV[1]
local st = redis.call('HGET', KEYS[4], node)
if st == 's' or st == 'f' or st == 'k' then return {} end
redis.call('HSET', KEYS[4], node, 'f')
redis.call('HINCRBY', KEYS[1], 'failed', 1)
local finished = 1
local skipped = {}
local queue = {}
local packed = redis.call('HGET', KEYS[2], node)
if packed then queue = cmsgpack.unpack(packed) end
local i = 1
while i <= #queue do
  local c = queue[i]
  i = i + 1
  local cs = redis.call('HGET', KEYS[4], c)
  if not cs or cs == 'w' or cs == 'r' then
    redis.call('HSET', KEYS[4], c, 'k')
    skipped[#skipped+1] = c
    finished = finished + 1
    local more = redis.call('HGET', KEYS[2], c)
    if more then
      for _, g in ipairs(cmsgpack.unpack(more)) do queue[#queue+1] = g end
    end
  end
end
if redis.call('HINCRBY', KEYS[1], 'remaining', -finished) == 0 then
  finalize(KEYS[1], ARGV[4], ARGV[3])
end
for k = 1, 4 do redis.call('PEXPIRE', KEYS[k], ARGV[2]) end
return skipped
"#
    )
}
