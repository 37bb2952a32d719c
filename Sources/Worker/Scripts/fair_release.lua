-- A fair queue's request ended (FairIntake.release): its user has one fewer in flight.
--
-- KEYS: request stream (for the slot; the keys below share its hash tag).
-- ARGV: key prefix, then user, entry ID pairs.

local prefix = ARGV[1]
for i = 2, #ARGV, 2 do
  local running = prefix .. 'running:' .. ARGV[i]
  redis.call('ZREM', running, ARGV[i + 1])
  if redis.call('EXISTS', running) == 0 then redis.call('ZREM', prefix .. 'busy', ARGV[i]) end
end
return 0
