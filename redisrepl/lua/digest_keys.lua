-- The digests of the keys of KEYS (ARGV: most items a key may have to be
-- digested, most bytes of a string), flat {digest, expiry} for each, as
-- digest_scan gives them; '' and -2 for an absent key.
local big = tonumber(ARGV[1] or '10000')
local big_bytes = tonumber(ARGV[2] or '8388608')
local out = {}
for i, k in ipairs(KEYS) do
  local d = key_digest(k, big, big_bytes)
  out[2 * i - 1] = d or ''
  out[2 * i] = d and tostring(redis.call('PEXPIRETIME', k)) or '-2'
end
return out
