-- One SCAN step (ARGV: cursor, match pattern, count, most items a key may
-- have to be digested, most bytes of a string), flat: {next cursor, the
-- microseconds the step took, key1, digest1, expiry1, tag1, ...} for the
-- keys of the step that are not redisrepl's own. (The time is the server's
-- own, of this script only: what a walk costs it, which redisrepl.pace
-- keeps to a share of its time.)
-- The expiry is PEXPIRETIME's (absolute unix ms, -1 for none), the tag the
-- hub's record of the key since its generation started (prelude:
-- after_tag). A digest is content_digest() of the key, 'x' for a type
-- redisrepl does not replicate, 'B' and the type for a big key (digested
-- a chunk per call by big_keys instead: in one call it would block the
-- server). Its first letter tells the type (none for a string: 40 hex
-- digits). The digest of a hash, a set or a sorted set does not depend on
-- the order of its items: it is the XOR of the SHA1s of its items; that of
-- a list or a stream is the SHA1 of the SHA1s of its items taken 1000 at a
-- time, so that it can be computed a chunk per call too.
local t0 = redis.call('TIME')
local res = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[3])
local big = tonumber(ARGV[4] or '10000')
local big_bytes = tonumber(ARGV[5] or '8388608')
local out = {res[1], '0'}
for _, k in ipairs(res[2]) do
  if not reserved(k) then
    local d = key_digest(k, big, big_bytes)
    if d then
      out[#out + 1] = k
      out[#out + 1] = d
      out[#out + 1] = tostring(redis.call('PEXPIRETIME', k))
      out[#out + 1] = after_tag(k)
    end
  end
end
local t1 = redis.call('TIME')
-- (0 if the server's clock stepped back meanwhile)
out[2] = fmt(math.max(0, (tonumber(t1[1]) - tonumber(t0[1])) * 1000000 + tonumber(t1[2]) - tonumber(t0[2])))
return out
