-- Drop records of the hash KEYS[1] (ARGV: key, entry, key, entry...), each
-- only if it still holds that entry: one written since it was read (a
-- copy made meanwhile, a deletion's tombstone) is newer than what the
-- caller judged, and stays. Answers {the number dropped}.
local n = 0
for i = 1, #ARGV - 1, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    n = n + redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return {n}
