-- One SCAN step (ARGV: cursor, match pattern, count), flat: {next cursor,
-- key, ...}, without redisrepl's own keys.
local res = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[3])
local out = {res[1]}
for _, k in ipairs(res[2]) do
  if not reserved(k) then
    out[#out + 1] = k
  end
end
return out
