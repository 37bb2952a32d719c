-- Extends the leases this worker holds (PoolSlotLedger.renew); returns those it no longer
-- holds (they expired and another worker's acquire dropped them).
--
-- KEYS: the sorted set of each lease, one key per lease (repeated for leases of one backend).
-- ARGV: lease duration in ms, then the ID of each lease, in the order of KEYS.

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local duration = tonumber(ARGV[1])
local lost = {}
for i = 1, #KEYS do
  if redis.call('ZSCORE', KEYS[i], ARGV[i + 1]) then
    redis.call('ZADD', KEYS[i], 'XX', now + duration, ARGV[i + 1])
    redis.call('PEXPIRE', KEYS[i], 2 * duration)
  else
    lost[#lost + 1] = ARGV[i + 1]
  end
end
return lost
