//! The Lua scripts that make a store's operations atomic on its master. Each touches only
//! the keys it names, all in one slot (the store's hash tag), as Redis Cluster requires.
//! Every script is idempotent: the cluster layer re-sends a whole group after a failure
//! whose outcome it could not see, and the second run must leave what the first would.

/// Applies a store's part of a batch if the store still exists and nobody wrote it since
/// this server read its fence: `KEYS = [meta, buckets, fence]`,
/// `ARGV = [fence read (-1: unchecked), token, field, bytes, field, bytes, ...]`; returns how
/// many buckets were new, -1 if the store is gone, -2 if another write came between (a
/// stale batch: refused), -3 if this very write (its token) was already applied.
pub(crate) const APPLY: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local f = tonumber(redis.call('HGET', KEYS[3], 'n') or '0')
local want = tonumber(ARGV[1])
if want >= 0 and f ~= want then
  if f == want + 1 and redis.call('HGET', KEYS[3], 'token') == ARGV[2] then return -3 end
  return -2
end
local new = 0
for i = 3, #ARGV, 2 do
  new = new + redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
redis.call('HSET', KEYS[3], 'n', f + 1, 'token', ARGV[2])
return new
";

/// Makes a store: `KEYS = [meta]`, `ARGV = [meta bytes]`; returns 1 if the store is now
/// exactly this (made now, or by an earlier run of the same request), 0 if the id is taken.
/// The value is written again when it is already there, so that `WAIT` covers it.
pub(crate) const CREATE: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
return 1
";

/// Deletes a store with its buckets in one step: `KEYS = [meta, buckets]`; returns
/// `[buckets removed, meta or false]`.
pub(crate) const DELETE: &str = r"
local n = redis.call('HLEN', KEYS[2])
local m = redis.call('GET', KEYS[1])
redis.call('UNLINK', KEYS[1], KEYS[2])
return {n, m}
";

/// Ranges of a store's buckets (Ring ORAM's slots): `KEYS = [buckets]`,
/// `ARGV = [field, offset, len, field, offset, len, ...]`; returns one entry per range: the
/// bytes, or false if the bucket was never written; an error if a bucket is too short.
pub(crate) const RANGE: &str = r"
local out = {}
for i = 1, #ARGV, 3 do
  local v = redis.call('HGET', KEYS[1], ARGV[i])
  local from, len = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  if not v then
    out[#out + 1] = false
  elseif #v < from + len then
    return redis.error_reply('SHROUD_SHORT bucket shorter than its store')
  else
    out[#out + 1] = string.sub(v, from + 1, from + len)
  end
end
return out
";

/// Records an outbox's owner: `KEYS = [outboxes]`, `ARGV = [number, capability hash]`;
/// returns 1 if the outbox is now this owner's, 0 if another's.
pub(crate) const OUTBOX: &str = r"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and cur ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
";

/// Marks the format version: `KEYS = [format]`, `ARGV = [version]`; returns the version
/// stored (this one if there was none).
pub(crate) const FORMAT: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur then return cur end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
";

/// Every script, loaded on each new connection (`SCRIPT LOAD`) and run with `EVALSHA`.
pub(crate) const ALL: [&str; 6] = [APPLY, CREATE, DELETE, RANGE, OUTBOX, FORMAT];
