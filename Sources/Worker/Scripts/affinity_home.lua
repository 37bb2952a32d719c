-- The backend a conversation is homed on (PoolSlotLedger.home), pool-wide: consistent hashing
-- with bounded loads. A conversation keeps its home while it is a candidate (its lifetime
-- renewed on each turn); a new one, or one whose home left, goes to the first backend in its
-- rendezvous order whose live conversations stay within the load factor times its weight's
-- share, so no backend is home to many more conversations than its share (plain hashing put
-- 10 of 16 on one of two servers).
--
-- KEYS: the conversation's home key (<prefix>:affinity:home:<conversation hash>); it is also
-- the conversation's member in the backends' sorted sets.
-- ARGV: the sorted sets' prefix (<prefix>:affinity:members:), lifetime ms, load factor, then
-- backend, weight pairs in the conversation's rendezvous order.
--
-- Returns the backend's name.

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local members, lifetime, factor = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local current = redis.call('GET', KEYS[1])
local backends, weights = {}, {}
for i = 4, #ARGV, 2 do
  backends[#backends + 1] = ARGV[i]
  weights[#weights + 1] = tonumber(ARGV[i + 1])
end
local chosen
for _, backend in ipairs(backends) do
  if backend == current then chosen = backend end
end
if not chosen then
  local loads, total, weight = {}, 1, 0
  for i, backend in ipairs(backends) do
    redis.call('ZREMRANGEBYSCORE', members .. backend, '-inf', now)
    loads[i] = redis.call('ZCARD', members .. backend)
    total = total + loads[i]
    weight = weight + weights[i]
  end
  chosen = backends[1]
  for i, backend in ipairs(backends) do
    if weight > 0 and loads[i] + 1 <= math.ceil(factor * total * weights[i] / weight) then
      chosen = backend
      break
    end
  end
  if current then redis.call('ZREM', members .. current, KEYS[1]) end
end
redis.call('SET', KEYS[1], chosen, 'PX', lifetime)
redis.call('ZADD', members .. chosen, now + lifetime, KEYS[1])
return chosen
