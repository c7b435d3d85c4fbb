-- The states of the keys of KEYS, atomically. ARGV: most items a key may
-- have to be read whole, most bytes its value may take to be read whole,
-- the bytes after which the reply takes no more keys. A flat array with,
-- for each key, a segment {type, pttl, tag, n, item1..itemn}: the value of
-- a string (n = 1), the field/value pairs of a hash, the elements of a
-- list (in order) or a set, the member/score pairs of a sorted set, and for
-- a stream each entry as {id, 2n, field1, value1, ... fieldn, valuen}.
-- pttl is the absolute expiry in unix ms (PEXPIRETIME), -1 without one, -2
-- if absent; tag is the hub's record of the key since its generation
-- started (prelude: after_tag). Flat because Webdis' raw output drops
-- nested arrays and nil elements; it also turns integers inside arrays into
-- bulk strings, hence tostring().
-- A key of more items or bytes than that (a big key) is not read: its
-- segment is {'big', pttl, tag, 2, type, item count (a string: its bytes)},
-- and big_keys copies it in pieces. Keys after the reply holds the budget
-- of bytes are not read either: {'later', -2, '', 0}, read them again.
local big = tonumber(ARGV[1] or '10000')
local big_bytes = tonumber(ARGV[2] or '8388608')
local budget = tonumber(ARGV[3] or '16777216')
local r = {}
local n = 0
local total = 0
for position, k in ipairs(KEYS) do
  local t = redis.call('TYPE', k)['ok']
  local items = {}
  local pttl = '-2'
  if position > 1 and total >= budget then
    t = 'later'
  elseif t ~= 'none' then
    pttl = tostring(redis.call('PEXPIRETIME', k))
    local count = COUNTERS[t] and redis.call(COUNTERS[t], k) or 0
    if count > big then
      items = {t, tostring(count)}
      t = 'big'
    elseif t == 'string' then
      local len = redis.call('STRLEN', k)
      if len > big_bytes then
        items = {t, tostring(len)}
        t = 'big'
      else
        items = {redis.call('GET', k)}
      end
    elseif t == 'hash' then
      items = redis.call('HGETALL', k)
    elseif t == 'list' then
      items = redis.call('LRANGE', k, 0, -1)
    elseif t == 'set' then
      items = redis.call('SMEMBERS', k)
    elseif t == 'zset' then
      items = canonical_scores(redis.call('ZRANGE', k, 0, -1, 'WITHSCORES'))
    elseif t == 'stream' then
      items = flatten_entries(redis.call('XRANGE', k, '-', '+'), {})
    end
    if t ~= 'big' and #items > 1 then
      local size = 0
      for j = 1, #items do
        size = size + #items[j]
      end
      if size > big_bytes then
        -- too many bytes for one reply: copied in chunks like a big key
        items = {t, tostring(count)}
        t = 'big'
      end
    end
  end
  r[n + 1] = t
  r[n + 2] = pttl
  r[n + 3] = after_tag(k)
  r[n + 4] = tostring(#items)
  n = n + 4
  for j = 1, #items do
    r[n + j] = items[j]
    total = total + #items[j]
  end
  n = n + #items
end
return r
