-- Keeps a fair queue's marks fresh (FairIntake.renew), every third of the claim idle time, from
-- every worker:
-- 1. this worker's running marks (user, entry ID pairs) live on for another lifetime;
-- 2. entries waiting under the staging consumer that have been idle for over the threshold are
--    refreshed (XCLAIM JUSTID to it again), so no claim takes a waiting entry for an abandoned
--    one; entries deleted from the stream are left for the take to answer as lost;
-- 3. users whose running marks have all expired (their worker died) leave the busy set.
--
-- KEYS: request stream.
-- ARGV: group, staging consumer, key prefix, mark lifetime (ms), idle threshold (ms), then
-- user, entry ID pairs.
--
-- Returns how many waiting entries it looked at: 1,000 (a full page) means there may be more,
-- and the caller runs it again (without marks).

local stream, group, stager, prefix = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local seen = 0
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
for i = 6, #ARGV, 2 do
  redis.call('ZADD', prefix .. 'running:' .. ARGV[i], 'XX', now + tonumber(ARGV[4]), ARGV[i + 1])
end
if redis.call('EXISTS', stream) == 1 then
  local ok, idle = pcall(redis.call, 'XPENDING', stream, group, 'IDLE', ARGV[5], '-', '+', 1000, stager)
  if ok then
    seen = #idle
    for _, row in ipairs(idle) do
      if #redis.call('XRANGE', stream, row[1], row[1]) > 0 then
        redis.call('XCLAIM', stream, group, stager, 0, row[1], 'JUSTID')
      end
    end
  end
end
for _, user in ipairs(redis.call('ZRANGE', prefix .. 'busy', 0, 31)) do
  local running = prefix .. 'running:' .. user
  redis.call('ZREMRANGEBYSCORE', running, '-inf', now)
  if redis.call('EXISTS', running) == 0 then redis.call('ZREM', prefix .. 'busy', user) end
end
return seen
