-- One chunk of a big key. KEYS = {key}; ARGV = {type, cursor, count, mode}.
-- Answers, flat, {next cursor ('0' at the end), type, ...}: with mode
-- 'items', the chunk's items as read gives them (of a string: one piece of
-- count bytes); with mode 'digest', the XOR of their SHA1s (hash, set,
-- sorted set) or the SHA1 of the chunk (list, stream: count must be 1000;
-- string: DIGEST_PIECE), in hex. When the key is no longer of that type it
-- answers {'0', its type now}. The cursor of a list is the index of its
-- next element, that of a stream the last ID read, that of a string the
-- offset of its next byte.
local k, kind, cursor, count, mode = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local t = redis.call('TYPE', k)['ok']
if t ~= kind then return {'0', t} end
local next_cursor = '0'
local items = {}
if t == 'hash' or t == 'set' or t == 'zset' then
  local res = redis.call(({hash = 'HSCAN', set = 'SSCAN', zset = 'ZSCAN'})[t], k, cursor, 'COUNT', count)
  next_cursor = res[1]
  items = res[2]
  if t == 'zset' then items = canonical_scores(items) end
elseif t == 'list' then
  local start = tonumber(cursor)
  items = redis.call('LRANGE', k, start, start + count - 1)
  if #items == count then next_cursor = tostring(start + count) end
elseif t == 'string' then
  local start = tonumber(cursor)
  local piece = redis.call('GETRANGE', k, start, start + count - 1)
  if #piece == count and redis.call('STRLEN', k) > start + count then next_cursor = tostring(start + count) end
  if mode == 'digest' then
    local h = ''
    if #piece > 0 then h = redis.sha1hex(piece) end
    return {next_cursor, t, h}
  end
  items = {piece}
elseif t == 'stream' then
  local from = '-'
  if cursor ~= '0' then from = '(' .. cursor end
  local entries = redis.call('XRANGE', k, from, '+', 'COUNT', count)
  if #entries == count then next_cursor = entries[#entries][1] end
  items = flatten_entries(entries, {})
else
  return {'0', t}
end
if mode ~= 'digest' then
  local out = {next_cursor, t}
  for i = 1, #items do
    out[i + 2] = items[i]
  end
  return out
end
if t == 'list' or t == 'stream' then
  local h = ''
  if #items > 0 then h = chunk_sha1(t, items) end
  return {next_cursor, t, h}
end
return {next_cursor, t, xor_digest(t, items)}
