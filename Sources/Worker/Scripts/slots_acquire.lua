-- Takes up to ARGV[1] slot leases among the backends, each to the backend with a free slot that
-- is furthest behind its weight in recent starts, as the worker's own member selection picks
-- (PoolSlotLedger.acquire). Leases past their expiry are dropped first: that is how a crashed
-- or stalled worker's slots come back.
--
-- KEYS: one sorted set of leases per backend (member: lease ID, score: expiry in ms).
-- ARGV: count wanted, lease duration in ms, a lease ID prefix unique to this call, then for
--       each key its slots, its weight and its recent starts (the worker's count).
-- Returns: for each lease granted, the index of its key (from 1) and its ID.

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local want = tonumber(ARGV[1])
local duration = tonumber(ARGV[2])
local held, slots, weights, starts = {}, {}, {}, {}
for i = 1, #KEYS do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
  held[i] = redis.call('ZCARD', KEYS[i])
  slots[i] = tonumber(ARGV[1 + 3 * i])
  weights[i] = tonumber(ARGV[2 + 3 * i])
  starts[i] = tonumber(ARGV[3 + 3 * i])
end

local granted = {}
for n = 1, want do
  local best = nil
  for i = 1, #KEYS do
    if held[i] < slots[i] and weights[i] > 0
      and (best == nil or starts[i] / weights[i] < starts[best] / weights[best]) then
      best = i
    end
  end
  if best == nil then break end
  local id = ARGV[3] .. ':' .. n
  redis.call('ZADD', KEYS[best], now + duration, id)
  redis.call('PEXPIRE', KEYS[best], 2 * duration)
  held[best] = held[best] + 1
  starts[best] = starts[best] + 1
  granted[#granted + 1] = best
  granted[#granted + 1] = id
end
return granted
