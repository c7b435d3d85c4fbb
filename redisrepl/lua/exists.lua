-- For each key of KEYS, flat: {'0' or '1', tag}: whether it exists, and the
-- hub's record of it since its generation started (prelude: after_tag).
local r = {}
for i, k in ipairs(KEYS) do
  r[2 * i - 1] = tostring(redis.call('EXISTS', k))
  r[2 * i] = after_tag(k)
end
return r
