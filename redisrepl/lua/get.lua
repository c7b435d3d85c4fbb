-- The string value of KEYS[1] (one of redisrepl's own keys: the shared
-- walk's description or table), as {'1', value}, or {'0'} if it does not
-- exist. Through a script, rather than a plain GET, so that its reply ends
-- with the call's fresh id: a reply meant for another request is refused.
local v = redis.call('GET', KEYS[1])
if v then
  return {'1', v}
end
return {'0'}
