-- Make each key of KEYS hold a state. ARGV: for each key a segment {type,
-- expiry, origin, expect, n, item1..itemn}; the expiry as an absolute unix
-- time in ms (PEXPIREAT: the same instant on both sides), 0 for none;
-- origin '' for a genuine change, or for a refill the stamp since which the
-- state is known (prelude: may_write); expect '' to write whatever the key
-- holds, or the digest (digest_scan's, with '@expiry') the key must still
-- hold, '-' for none: a copy the reconcile decided on what it saw is not
-- made over a change made since. The type 'none' deletes. Chunks of a big
-- key go to a temporary key: a type with '=' in front ('=hash') replaces
-- what the key holds, one with '+' in front adds to it, and for both the
-- expiry is relative (ms from now, PEXPIRE: by the server's clock).
-- Answers the positions (1-based) of the keys not written: refills of a
-- key that holds something as fresh already, and keys that changed since
-- what was expected.
--
-- The keyspace events of a whole write do not depend on what the key held
-- before (redisrepl.echoes predicts them, to drop its echoes without a
-- read): a string is SET; any other state first makes the key a string and
-- deletes it ('set', 'del': DEL alone says nothing of an absent key), then
-- adds its items in chunks of 4,000 arguments, then the expiry ('expire').
local function chunked(cmd, k, list, first, last)
  local i = first
  while i <= last do
    local j = math.min(i + 3999, last)
    redis.call(cmd, k, unpack(list, i, j))
    i = j + 1
  end
end
local function expire(k, at, temporary)
  if at > 0 then
    redis.call(temporary and 'PEXPIRE' or 'PEXPIREAT', k, at)
  end
end
-- what the key holds, as digest_scan says it (a key too big to digest in
-- one call is taken as expected: its copy goes through big_keys instead)
local function holds(k, expect)
  local d = key_digest(k, 100000, 8388608)
  if not d then
    return expect == '-'
  end
  if string.sub(d, 1, 1) == 'B' then
    return true
  end
  local at = redis.call('PEXPIRETIME', k)
  if at >= 0 then
    d = d .. '@' .. at
  end
  return d == expect
end
local WRITABLE = {none = 1, string = 1, hash = 1, list = 1, set = 1, zset = 1, stream = 1}
local ADD = {hash = 'HSET', list = 'RPUSH', set = 'SADD'}
local skipped = {}
local a = 1
for position, k in ipairs(KEYS) do
  local kind = ARGV[a]
  local pttl = tonumber(ARGV[a + 1])
  local origin = ARGV[a + 2]
  local expect = ARGV[a + 3]
  local first = a + 5
  a = first + tonumber(ARGV[a + 4])
  local mode = string.sub(kind, 1, 1)
  local temporary = mode == '+' or mode == '='
  if temporary then
    kind = string.sub(kind, 2)
  end
  if not may_write(k, origin) or (expect ~= '' and not holds(k, expect)) then
    skipped[#skipped + 1] = tostring(position)
  else
    if not WRITABLE[kind] then
      return redis.error_reply('ERR redisrepl cannot write a key of type ' .. kind)
    end
    if mode ~= '+' and kind ~= 'string' then
      if not temporary then
        redis.call('SET', k, '')
      end
      redis.call('DEL', k)
    end
    if kind == 'none' then
      -- deleted above
    elseif kind == 'string' then
      redis.call('SET', k, ARGV[first])
      expire(k, pttl, temporary)
    elseif kind == 'hash' or kind == 'list' or kind == 'set' then
      chunked(ADD[kind], k, ARGV, first, a - 1)
      expire(k, pttl, temporary)
    elseif kind == 'zset' then
      local pairs_ = {}
      for i = first, a - 1, 2 do
        pairs_[#pairs_ + 1] = ARGV[i + 1]
        pairs_[#pairs_ + 1] = ARGV[i]
      end
      chunked('ZADD', k, pairs_, 1, #pairs_)
      expire(k, pttl, temporary)
    elseif kind == 'stream' then
      local i = first
      while i < a do
        local n = tonumber(ARGV[i + 1])
        redis.call('XADD', k, ARGV[i], unpack(ARGV, i + 2, i + 1 + n))
        i = i + 2 + n
      end
      if first == a and not temporary then
        -- an empty stream still exists: create it and take its only entry away
        redis.call('XADD', k, '0-1', '_', '_')
        redis.call('XDEL', k, '0-1')
      end
      expire(k, pttl, temporary)
    end
    if not temporary then
      wrote(k, origin)
    end
  end
end
return skipped
