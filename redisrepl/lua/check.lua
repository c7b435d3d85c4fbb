-- The side's state for the periodic check. ARGV = {heartbeat key or '',
-- its lifetime in ms, a reserved key whose presence to report or ''}.
-- Sets the heartbeat key when one is given (its keyspace event proves the
-- event stream alive) and answers {hist, 1 or 0 for the reported key,
-- the server's time}: hist is the generations' record (prelude: EPOCH)
-- for telling what a loss took.
if ARGV[1] ~= '' then
  redis.call('SET', ARGV[1], fmt(EPOCH.now), 'PX', ARGV[2])
end
local present = '0'
if ARGV[3] and ARGV[3] ~= '' then
  present = tostring(redis.call('EXISTS', ARGV[3]))
end
return {EPOCH.hist, present, fmt(EPOCH.now)}
