-- One SCAN step (ARGV: cursor, match pattern, count, reserved prefix),
-- flat: {next cursor, key, ...}, without the keys under the reserved prefix.
local res = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[3])
local reserved_prefix = ARGV[4]
local out = {res[1]}
for _, k in ipairs(res[2]) do
  if reserved_prefix == '' or string.sub(k, 1, #reserved_prefix) ~= reserved_prefix then
    out[#out + 1] = k
  end
end
return out
