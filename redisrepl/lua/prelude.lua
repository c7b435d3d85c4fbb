-- Shared by every script of redisrepl (redisrepl/scripts.py puts it in front
-- of each one and the epilogue after it).
--
-- The call's context is in the last four ARGV, added by redisrepl.stores
-- and taken off here, so each script sees only its own arguments:
--   the reserved prefix of the namespace (its heartbeat keys),
--   the meta prefix (redisrepl's own keys, outside the namespace: the
--   epoch lives there),
--   a fresh random id (used if this call starts a generation, and sent back
--   last in every reply: the daemon checks that a reply is its own),
--   flags: 'w<seconds>' on the hub (stamp its writes, and for that many
--   seconds after a generation starts remember which keys were written
--   and the stamp of what they hold), '' on the local side, 'r' to only
--   look (redisrepl verify and the reconcile's dry run: no generation is
--   started, the epoch is not touched; 'r<seconds>' on the hub reads the
--   record of keys written within the window).
local CTX_FLAGS = table.remove(ARGV)
local CTX_FRESH = table.remove(ARGV)
local CTX_META = table.remove(ARGV)
local CTX_PREFIX = table.remove(ARGV)

local function fmt(x)
  return string.format('%.0f', x)
end

-- The side's generation. The hash <meta>epoch holds an id, the run_id of
-- the server it was made under, a stamp n (a hybrid clock in microseconds:
-- max(n + 1, now), bumped by every write on the hub, so it only grows and
-- survives a wipe) and the start s0 of the generation. A generation ends
-- when the epoch is gone (FLUSHDB, FLUSHALL, a restart without
-- persistence) or the server is not the one that made it (a restart,
-- from any snapshot, or a failover): the next call of any script starts a
-- new one and records in 'hist' the stamps lost: everything after n0 (the
-- n that was loaded, 0 after a wipe) and before s0.
local EPOCH = (function()
  local key = CTX_META .. 'epoch'
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local run = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)') or '?'
  local e = redis.call('HMGET', key, 'id', 'run', 'n', 's0', 'hist', 'n0')
  local id, n, s0, hist = e[1], tonumber(e[3] or '') or 0, tonumber(e[4] or '') or 0, e[5] or ''
  local n0 = tonumber(e[6] or '') or 0
  local look = string.sub(CTX_FLAGS, 1, 1) == 'r'
  if not id or e[2] ~= run then
    n0 = id and n or 0
    s0 = math.max(now, n + 1)
    local records = {}
    for record in string.gmatch(hist, '[^;]+') do
      records[#records + 1] = record
    end
    records[#records + 1] = CTX_FRESH .. ':' .. fmt(n0) .. ':' .. fmt(s0)
    hist = table.concat(records, ';', math.max(1, #records - 15))
    id, n = CTX_FRESH, s0
    if look then
      -- only looking: the generation the next writing call would start,
      -- told by its id '' and not made
      id = ''
    else
      redis.call('HSET', key, 'id', id, 'run', run, 'n', fmt(n), 's0', fmt(s0), 'hist', hist, 'n0', fmt(n0))
    end
  end
  local track = string.sub(CTX_FLAGS, 1, 1) == 'w'
  local window = tonumber(string.sub(CTX_FLAGS, 2)) or 0
  local after = nil
  if (track or (look and id ~= '')) and now < s0 + window * 1000000 then
    after = CTX_META .. 'after:' .. id
  end
  return {key = key, id = id, n = n, s0 = s0, n0 = n0, now = now, hist = hist, track = track,
          after = after, after_until = fmt(s0 / 1000 + window * 1000), bumped = false, touched = false}
end)()

-- Is k one of redisrepl's own keys (never replicated nor tracked)?
local function reserved(k)
  return string.sub(k, 1, #CTX_PREFIX) == CTX_PREFIX or string.sub(k, 1, 13) == '__redisrepl__'
end

-- The stamp of this call's writes (the epoch's n, bumped once per call).
local function write_stamp()
  if EPOCH.track and not EPOCH.bumped then
    EPOCH.n = math.max(EPOCH.n + 1, EPOCH.now)
    redis.call('HSET', EPOCH.key, 'n', fmt(EPOCH.n))
    EPOCH.bumped = true
  end
  return EPOCH.n
end

-- The stamp of what k holds, if it was written since the generation
-- started (within the window), else '' .
local function after_tag(k)
  if not EPOCH.after then
    return ''
  end
  return redis.call('HGET', EPOCH.after, k) or ''
end

-- May k be written? A genuine change (origin '') always; a refill, of a
-- state known since the stamp origin, only while the window is open and
-- if k holds nothing written since the generation started that is at
-- least as fresh.
local function may_write(k, origin)
  if origin == '' or not EPOCH.track or reserved(k) then
    return true
  end
  if not EPOCH.after then
    return false
  end
  local tag = redis.call('HGET', EPOCH.after, k)
  return not tag or tonumber(tag) < tonumber(origin)
end

-- After writing k: stamp the write, and remember it during the window.
local function wrote(k, origin)
  if not EPOCH.track or reserved(k) then
    return
  end
  local n = write_stamp()
  if EPOCH.after then
    local tag = origin
    if tag == '' then
      tag = fmt(n)
    end
    redis.call('HSET', EPOCH.after, k, tag)
    if not EPOCH.touched then
      redis.call('PEXPIREAT', EPOCH.after, EPOCH.after_until)
      EPOCH.touched = true
    end
  end
end

-- Every reply ends with the side's generation: its id, the stamp of this
-- call (after its writes), the generation's start, and the stamp a state
-- read in this call is as of when the hub has no record of the key
-- (after_tag): while the window is open, what the generation started from
-- (n0: any such state predates it), afterwards the stamp of this call.
local function epilogue(result)
  if type(result) ~= 'table' then
    result = {result}
  elseif result.err then
    return result
  end
  local n = #result
  result[n + 1] = EPOCH.id
  result[n + 2] = fmt(EPOCH.n)
  result[n + 3] = fmt(EPOCH.s0)
  result[n + 4] = fmt(EPOCH.after and math.min(EPOCH.n0, EPOCH.n) or EPOCH.n)
  result[n + 5] = CTX_FRESH
  return result
end

local COUNTERS = {hash = 'HLEN', list = 'LLEN', set = 'SCARD', zset = 'ZCARD', stream = 'XLEN'}

-- XRANGE entries as flat items: id, field count, field, value, ... each
local function flatten_entries(entries, items)
  for _, entry in ipairs(entries) do
    items[#items + 1] = entry[1]
    items[#items + 1] = tostring(#entry[2])
    for _, x in ipairs(entry[2]) do
      items[#items + 1] = x
    end
  end
  return items
end

-- one spelling of a score whatever the Redis version (7.2 prints 1.1 where
-- 7.0 prints 1.1000000000000001) or the encoding: zero without a sign (a
-- skiplist keeps -0, a listpack turns it into 0, so a sorted set and its
-- copy could otherwise differ by their digests for ever)
local function canonical_scores(flat)
  for i = 2, #flat, 2 do
    local score = tonumber(flat[i])
    if score == 0 then
      score = 0
    end
    flat[i] = string.format('%.17g', score)
  end
  return flat
end

-- the XOR of the SHA1s of the items of a set, or of the pairs of a hash or
-- a sorted set (its scores canonical), in hex
local function xor_digest(t, items)
  local acc = {0, 0, 0, 0, 0}
  local function xor_into(h)
    for i = 1, 5 do
      acc[i] = bit.bxor(acc[i], tonumber(string.sub(h, i * 8 - 7, i * 8), 16))
    end
  end
  if t == 'set' then
    for _, m in ipairs(items) do
      xor_into(redis.sha1hex(m))
    end
  else
    for i = 1, #items, 2 do
      xor_into(redis.sha1hex(#items[i] .. ':' .. items[i] .. items[i + 1]))
    end
  end
  local parts = {}
  for i = 1, 5 do
    parts[i] = string.format('%08x', acc[i] % 4294967296)
  end
  return table.concat(parts)
end

-- the SHA1 (hex) of one chunk of list elements or of flat stream entries
local function chunk_sha1(t, items)
  local parts = {}
  if t == 'list' then
    for i, e in ipairs(items) do
      parts[i] = #e .. ':' .. e
    end
  else
    local i = 1
    while i <= #items do
      local n = tonumber(items[i + 1])
      parts[#parts + 1] = #items[i] .. ':' .. items[i]
      for j = i + 2, i + 1 + n do
        parts[#parts + 1] = #items[j] .. ':' .. items[j]
      end
      parts[#parts + 1] = ';'
      i = i + 2 + n
    end
  end
  return redis.sha1hex(table.concat(parts))
end

-- the SHA1 of the SHA1s of the chunks of a list's elements or a stream's entries
local function chunked_sha1(t, all)
  local hexes = {}
  for first = 1, #all, 1000 do
    local chunk = {unpack(all, first, math.min(first + 999, #all))}
    if t == 'stream' then chunk = flatten_entries(chunk, {}) end
    hexes[#hexes + 1] = chunk_sha1(t, chunk)
  end
  return redis.sha1hex(table.concat(hexes))
end

-- a string longer than this is digested a piece of this many bytes at a time
local DIGEST_PIECE = 1048576

-- the digest of a long string: the SHA1 of the SHA1s of its pieces
local function pieces_sha1(k, len)
  local hexes = {}
  for start = 0, len - 1, DIGEST_PIECE do
    hexes[#hexes + 1] = redis.sha1hex(redis.call('GETRANGE', k, start, start + DIGEST_PIECE - 1))
  end
  return 'S' .. redis.sha1hex(table.concat(hexes))
end

-- content_digest() of key k; 'B' and its type for a key of more than big
-- items (or a string of more than big_bytes bytes); 'x' for a type not
-- replicated; nil if absent
local function key_digest(k, big, big_bytes)
  local t = redis.call('TYPE', k)['ok']
  if COUNTERS[t] and redis.call(COUNTERS[t], k) > big then
    return 'B' .. t
  elseif t == 'string' then
    local len = redis.call('STRLEN', k)
    if len > (big_bytes or 8388608) then
      return 'Bstring'
    elseif len > DIGEST_PIECE then
      return pieces_sha1(k, len)
    end
    return redis.sha1hex('s' .. redis.call('GET', k))
  elseif t == 'hash' then
    return 'h' .. xor_digest(t, redis.call('HGETALL', k))
  elseif t == 'set' then
    return 'm' .. xor_digest(t, redis.call('SMEMBERS', k))
  elseif t == 'zset' then
    return 'z' .. xor_digest(t, canonical_scores(redis.call('ZRANGE', k, 0, -1, 'WITHSCORES')))
  elseif t == 'list' then
    return 'l' .. chunked_sha1(t, redis.call('LRANGE', k, 0, -1))
  elseif t == 'stream' then
    return 't' .. chunked_sha1(t, redis.call('XRANGE', k, '-', '+'))
  elseif t ~= 'none' then
    return 'x'
  end
  return nil
end
