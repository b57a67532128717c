//! The Lua scripts that make each store step atomic in Redis.
//!
//! Every script that writes a record starts with [`APPLY`], the Redis twin
//! of `TaskRecord::apply`: the same rules, checked against the in-memory
//! store by the tests. An update travels as 12 arguments starting at
//! `base` (see `UpdateArgs` in the parent module).

/// `apply(rec, ttl_ms, chan, base)`: applies the state rules to the record
/// hash, adds the history entry as a field of its own, refreshes the TTL
/// and publishes final states. A late producer state only records its
/// time. An empty field means "none".
pub const APPLY: &str = r#"
local function apply(rec, ttl, chan, b)
  local state, attempt, at = ARGV[b], ARGV[b+1], ARGV[b+2]
  local worker, ikey, wf = ARGV[b+3], ARGV[b+4], ARGV[b+5]
  local task, queue = ARGV[b+6], ARGV[b+7]
  local has_err, err_type, err_msg = ARGV[b+8], ARGV[b+9], ARGV[b+10]
  local hfield, entry = ARGV[b+11], ARGV[b+12]
  local has_result, result = ARGV[b+13], ARGV[b+14]
  local cur = redis.call('HMGET', rec, 'state', 'created_at', 'queued_at')
  local f = {'task', task, 'queue', queue}
  if ikey ~= '' then f[#f+1] = 'key'; f[#f+1] = ikey end
  if wf ~= '' then f[#f+1] = 'wf'; f[#f+1] = wf end
  if state == 'created' and not cur[2] then f[#f+1] = 'created_at'; f[#f+1] = at end
  if state == 'queued' and not cur[3] then f[#f+1] = 'queued_at'; f[#f+1] = at end
  local final = (state == 'succeeded' or state == 'failed' or state == 'skipped' or state == 'revoked' or state == 'expired')
  local applied = 1
  if (state == 'created' or state == 'queued') and cur[1] and cur[1] ~= 'created' and cur[1] ~= 'queued' then
    applied = 0
  else
    f[#f+1] = 'state'; f[#f+1] = state
    f[#f+1] = 'attempt'; f[#f+1] = attempt
    if worker ~= '' then f[#f+1] = 'worker'; f[#f+1] = worker end
    if state == 'started' then
      f[#f+1] = 'started_at'; f[#f+1] = at
      f[#f+1] = 'finished_at'; f[#f+1] = ''
    elseif final then
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
    f[#f+1] = hfield; f[#f+1] = entry
  end
  redis.call('HSET', rec, unpack(f))
  redis.call('PEXPIRE', rec, ttl)
  if applied == 1 and final then redis.call('PUBLISH', chan, state) end
  return applied
end
"#;

/// Arguments of one update after its channel (see `update_args`).
pub const UPDATE_ARGS: usize = 15;

/// KEYS: the record of each update. ARGV: ttl_ms, then for each update its
/// channel and its `UPDATE_ARGS` fields. Applies them in order.
pub const RECORD: &str = r#"
for i = 1, #KEYS do
  local p = 2 + (i - 1) * 16
  apply(KEYS[i], ARGV[1], ARGV[p], p + 1)
end
return #KEYS
"#;

/// Updates per `RECORD` call: enough to amortise the call, few enough that
/// one call never holds Redis for long.
pub const RECORD_BATCH: usize = 200;

/// KEYS: claim, rec. ARGV: key_ttl_ms, stale_ms, record prefix, task
/// id, result ttl_ms, chan, update. Returns {0, '', 0} when claimed (also
/// when the key is already bound to this very task id, not yet queued: a
/// send claiming again after its first claim's answer was lost), or {1, first id,
/// republish}.
pub const CLAIM: &str = r#"
local existing = redis.call('GET', KEYS[1])
if not existing then
  redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[1])
  apply(KEYS[2], ARGV[5], ARGV[6], 7)
  return {0, '', 0}
end
local rec = ARGV[3] .. existing
local st = redis.call('HMGET', rec, 'state', 'created_at', 'q')
local unsent = st[1] == 'created' and not st[3]
if existing == ARGV[4] and (not st[1] or unsent) then
  return {0, '', 0}
end
local now = tonumber(ARGV[9])
if unsent and st[2] and now - tonumber(st[2]) > tonumber(ARGV[2]) then
  redis.call('HSET', rec, 'created_at', ARGV[9])
  return {1, existing, 1}
end
return {1, existing, 0}
"#;

/// KEYS: key. ARGV: token. Releases the run lease if this run still holds
/// it.
pub const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return 1
"#;

/// KEYS: key. ARGV: token, lease_ms. Returns 1 when renewed.
pub const RENEW: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
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

/// KEYS: w, children, pending, status, nodes. ARGV: ttl_ms; the record's
/// state, nodes, remaining, failed, outputs and created_at; the node count
/// `n`; per node its id, definition, status and dependencies left (empty
/// for a root); then pairs of a node and its packed children. Creates the
/// workflow unless its record exists: returns 1 when created, 0 when it
/// existed (and is left as it is).
pub const CREATE_WORKFLOW: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'nodes', ARGV[3], 'remaining', ARGV[4],
  'failed', ARGV[5], 'outputs', ARGV[6], 'created_at', ARGV[7])
local b = 9
for _ = 1, tonumber(ARGV[8]) do
  redis.call('HSET', KEYS[5], ARGV[b], ARGV[b + 1])
  redis.call('HSET', KEYS[4], ARGV[b], ARGV[b + 2])
  if ARGV[b + 3] ~= '' then redis.call('HSET', KEYS[3], ARGV[b], ARGV[b + 3]) end
  b = b + 4
end
while b < #ARGV do
  redis.call('HSET', KEYS[2], ARGV[b], ARGV[b + 1])
  b = b + 2
end
for i = 1, 5 do redis.call('PEXPIRE', KEYS[i], ARGV[1]) end
return 1
"#;
