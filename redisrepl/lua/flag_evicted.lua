-- Mark the synchronised states of the keys of ARGV[2..] as evicted on a
-- side (ARGV[1]: 'L' or 'R'), in the hash KEYS[1]: the reconcile then
-- neither deletes them on the other side nor refills them here.
local marked = 0
for i = 2, #ARGV do
  local v = redis.call('HGET', KEYS[1], ARGV[i])
  if v then
    v = string.gsub(v, '!.$', '')
    redis.call('HSET', KEYS[1], ARGV[i], v .. '!' .. ARGV[1])
    marked = marked + 1
  end
end
return {marked}
