-- Record synchronised states in the hash KEYS[1] (ARGV: the local
-- generation they were copied under, then key, entry, key, entry...),
-- only if that generation is still the local side's: a record of a copy
-- made before the local Redis lost its data must not outlive the data
-- (it would make the loss look like deletions). Answers {1} if recorded,
-- {0} if not.
if ARGV[1] ~= '' and ARGV[1] ~= EPOCH.id then
  return {0}
end
local i = 2
while i <= #ARGV do
  local j = math.min(i + 3999, #ARGV)
  redis.call('HSET', KEYS[1], unpack(ARGV, i, j))
  i = j + 1
end
return {1}
