-- Put a big key's copy in place. KEYS = {temporary key, key}; ARGV =
-- {expiry: absolute unix ms, 0 for none; origin, as for write}. Answers
-- {0} if the temporary key is gone (nothing was done), {2} if the key may
-- not be written (a refill of a key that holds something as fresh: the
-- copy is dropped), {1} once it is in place.
if redis.call('EXISTS', KEYS[1]) == 0 then return {0} end
local origin = ARGV[2] or ''
if not may_write(KEYS[2], origin) then
  redis.call('DEL', KEYS[1])
  return {2}
end
redis.call('RENAME', KEYS[1], KEYS[2])
local at = tonumber(ARGV[1])
if at > 0 then
  redis.call('PEXPIREAT', KEYS[2], at)
else
  redis.call('PERSIST', KEYS[2])
end
wrote(KEYS[2], origin)
return {1}
