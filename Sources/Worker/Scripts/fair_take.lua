-- Fair intake (FairIntake.take): moves the queue's new entries into per-user waiting lists, then
-- takes up to a count of them for this consumer, user by user in turn, in one atomic step.
--
-- New entries are read into the group under the staging consumer (ARGV[3]), so they are pending
-- and safe, and their IDs wait in `<prefix>waiting:<user>` (the entry's `user` field; "" without
-- one). `<prefix>users` orders the users with entries waiting by turn: the next entry goes to the
-- lowest score, which then moves behind everyone (`<prefix>turn` counts the turns); a user who
-- arrives takes the next turn. A user at its maximum in flight or out of its request budget is
-- passed over and loses its turn (its entries wait; every other user goes on): work-conserving.
-- An entry taken is moved to this consumer with XCLAIM JUSTID, which keeps its delivery count.
--
-- KEYS: request stream.
-- ARGV: group, consumer, staging consumer, key prefix, how many to take, how many new entries
-- to stage at most, per-user maximum in flight (0: none), per-user requests per minute (0: none),
-- how long a running mark lives unrenewed (ms), lost-marker prefix, lost-marker lifetime (ms).
--
-- Returns {{{id, fields, deliveries, user}...}, {deleted IDs...}, entries held back by a user
-- limit, the group's last delivered ID}. An entry deleted from the stream while it waited leaves
-- the group and is marked lost, as the claim script does, so that it is still answered.

local stream, group, consumer, stager, prefix = KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local want, batch = tonumber(ARGV[5]), tonumber(ARGV[6])
local maxInFlight, perMinute, lifetime = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local usersKey, turnKey = prefix .. 'users', prefix .. 'turn'
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

-- 1. Stage what is new.
local turn = tonumber(redis.call('GET', turnKey) or '0')
local read = redis.call('XREADGROUP', 'GROUP', group, stager, 'COUNT', batch, 'STREAMS', stream, '>')
if read then
  for _, entry in ipairs(read[1][2]) do
    local fields, user = entry[2], ''
    for i = 1, #fields, 2 do
      if fields[i] == 'user' then user = fields[i + 1]; break end
    end
    -- Too long to be a user: the parser refuses the request; it waits with the unnamed.
    if #user > 256 then user = '' end
    redis.call('RPUSH', prefix .. 'waiting:' .. user, entry[1])
    redis.call('ZADD', usersKey, 'NX', turn - 0.5, user)
  end
end

-- 2. Whether a user may start one more now; a named user's limits only.
local function allowed(user)
  if user == '' then return true end
  if maxInFlight > 0 then
    local running = prefix .. 'running:' .. user
    redis.call('ZREMRANGEBYSCORE', running, '-inf', now)
    if redis.call('ZCARD', running) >= maxInFlight then return false end
  end
  if perMinute > 0 then
    local bucket = prefix .. 'rate:' .. user
    local state = redis.call('HMGET', bucket, 'tokens', 'at')
    local tokens = tonumber(state[1]) or perMinute
    local at = tonumber(state[2]) or now
    tokens = math.min(perMinute, tokens + (now - at) * perMinute / 60000)
    redis.call('HSET', bucket, 'tokens', tostring(tokens), 'at', now)
    redis.call('PEXPIRE', bucket, 120000)
    if tokens < 1 then return false end
  end
  return true
end

local function started(user, id)
  if user == '' then return end
  local running = prefix .. 'running:' .. user
  redis.call('ZADD', running, now + lifetime, id)
  redis.call('ZADD', prefix .. 'busy', now, user)
  if perMinute > 0 then redis.call('HINCRBYFLOAT', prefix .. 'rate:' .. user, 'tokens', -1) end
end

-- 3. Take, user by user.
local taken, deleted, held = {}, {}, 0
local queue = redis.call('ZRANGE', usersKey, 0, 63)
local position = 1
while #taken + #deleted < want and position <= #queue do
  local user = queue[position]
  position = position + 1
  local waiting = prefix .. 'waiting:' .. user
  turn = turn + 1
  if not allowed(user) then
    held = held + redis.call('LLEN', waiting)
    redis.call('ZADD', usersKey, turn, user)
  else
    -- The first of its entries still waiting here (one answered after a claim is skipped).
    local done = false
    while not done do
      local id = redis.call('LPOP', waiting)
      if not id then break end
      local pending = redis.call('XPENDING', stream, group, id, id, 1)
      if #pending > 0 and pending[1][2] == stager then
        local entry = redis.call('XRANGE', stream, id, id)
        if #entry == 0 then
          redis.call('XACK', stream, group, id)
          redis.call('SET', ARGV[10] .. id, 'lost', 'PX', ARGV[11], 'NX')
          deleted[#deleted + 1] = id
        else
          redis.call('XCLAIM', stream, group, consumer, 0, id, 'JUSTID')
          taken[#taken + 1] = {id, entry[1][2], pending[1][4], user}
          started(user, id)
        end
        done = true
      end
    end
    if redis.call('LLEN', waiting) == 0 then
      redis.call('ZREM', usersKey, user)
    else
      redis.call('ZADD', usersKey, turn, user)
      -- Its next turn comes after every user now in the queue.
      queue[#queue + 1] = user
    end
  end
end
redis.call('SET', turnKey, turn)

local last = '0-0'
for _, row in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
  local info = {}
  for i = 1, #row, 2 do info[row[i]] = row[i + 1] end
  if info['name'] == group then last = info['last-delivered-id'] end
end
return {taken, deleted, held, last}
