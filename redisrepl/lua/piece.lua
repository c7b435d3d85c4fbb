-- A piece of a big string's copy, appended to its temporary key. Not
-- wrapped in the prelude: its last argument is the piece itself (on the
-- hub, the body of a PUT, which Webdis makes the last argument).
-- KEYS = {temporary key}; ARGV = {offset, lifetime in ms, the call's fresh
-- id, the bytes}. Answers {"1", fresh id} once the piece is in place (the key
-- then expires in that lifetime unless finished), {"0", fresh id} if the key
-- does not hold exactly `offset` bytes (a piece before this one is missing,
-- or the copy was abandoned: nothing is written). Called with no key, it
-- does nothing (run so to cache it after NOSCRIPT). The fresh id last tells
-- the daemon the reply is its own, so a piece it takes as done has run,
-- after every piece before it.
if #KEYS == 0 then return {} end
local offset = tonumber(ARGV[1])
local bytes = ARGV[4] or '' -- (Webdis adds no argument for an empty body)
if redis.call('STRLEN', KEYS[1]) ~= offset then
  return {'0', ARGV[3]}
end
if offset == 0 then
  redis.call('SET', KEYS[1], bytes, 'PX', ARGV[2])
else
  redis.call('APPEND', KEYS[1], bytes)
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return {'1', ARGV[3]}
