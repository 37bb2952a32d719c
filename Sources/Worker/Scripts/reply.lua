-- The reply script: publishes a reply (and a dead-letter record, and a streamed answer's last
-- chunk) and acknowledges the request in one atomic step (RequestStream.reply).
--
-- KEYS and ARGV are listed once, in order, by ReplyScriptArguments
-- (Sources/Worker/ReplyScriptArguments.swift); the first lines below name them the same way.
--
-- Returns 1 when written, 0 when the entry is not ours (pending on another consumer), 2 when it
-- is neither pending nor in the stream and unanswered, 3 when a reply exists already
-- (RequestStream.ReplyResult).
--
-- An entry that is not pending was acknowledged by its reply, unless the lost marker says it
-- left the group unanswered: so an attempt whose answer was lost with its connection, retried,
-- finds proof that it wrote (3) rather than an entry to answer as lost (2).
--
-- The stats hash counts `replies:<status>`, `error:<code>` and `backend:<name>:<status>` with
-- each reply written; a stats key of another type, or a field that is not a counter, is left
-- alone (the counts are a convenience, the reply is not).
--
-- Checks everything before the first write, writes, and acknowledges last: a script is not
-- rolled back when a command fails, so no command that can fail may come after a write, and an
-- entry must never be acknowledged without its reply. (Redis refuses a script's first write
-- when out of memory, never a later one, so OOM cannot split it either.) A `reply_to`, chunk,
-- dead-letter or history key that is not a stream costs only what it was for, and the reply
-- says so: the reply goes to the default reply stream, the last chunk or the record is not
-- written.

-- KEYS[1] requests, [2] replyStream, [3] deadLetters, [4] history, [5] lostMarker, [6] stats,
-- [7] defaultReplies, [8] the last chunk's stream (ReplyScriptArguments.keys).
-- ARGV (ReplyScriptArguments.arguments): group, entryID, consumer, mode,
local group, id, consumer, mode = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
-- replyMaxLength, deadLetterMaxLength,
local replyMax, deadMax = tonumber(ARGV[5]), tonumber(ARGV[6])
-- keepAnswered, historyMaxLength, historyMinimumID,
local keep, historyMax, historyMinID = ARGV[7] == 'keep', tonumber(ARGV[8]), ARGV[9]
-- status, errorCode, backend,
local status, errorCode, backend = ARGV[10], ARGV[11], ARGV[12]
-- the ARGV counts of deadLetter and lastChunk,
local deadCount, chunkCount = tonumber(ARGV[13]), tonumber(ARGV[14])
-- lastChunk's expiry and maximum length, markerLifetime,
local chunkExpire, chunkMax, markerLifetime = tonumber(ARGV[15]), tonumber(ARGV[16]), tonumber(ARGV[17])
-- then deadLetter's fields, lastChunk's fields, and the reply's fields to the end.
local first = 18
-- Where the last chunk's fields start, fixed before deadCount can be cleared below.
local chunkFirst = first + deadCount
local function notStream(key)
  local kind = redis.call('TYPE', key)['ok']
  if kind == 'stream' or kind == 'none' then return nil end
  return kind
end
local function add(key, maxLength, fields)
  if maxLength > 0 then
    redis.call('XADD', key, 'MAXLEN', '~', maxLength, '*', unpack(fields))
  else
    redis.call('XADD', key, '*', unpack(fields))
  end
end
local pending = redis.call('XPENDING', KEYS[1], group, id, id, 1)
if #pending > 0 then
  -- Pending on another consumer: it took the entry over and answers it.
  if mode == 'lost' or pending[1][2] ~= consumer then return 0 end
else
  -- Not pending: acknowledged by its reply, unless marked as lost unanswered.
  local marker = redis.call('GET', KEYS[5])
  if marker ~= 'lost' then return 3 end
  if mode ~= 'lost' then return 2 end
end
local reply = {}
for i = first + deadCount + chunkCount, #ARGV do reply[#reply + 1] = ARGV[i] end
local replyKey = KEYS[2]
local kind = notStream(replyKey)
if kind and replyKey ~= KEYS[7] then
  reply[#reply + 1] = 'reply_error'
  reply[#reply + 1] = 'could not write to reply_to ' .. replyKey .. ': it holds a ' .. kind .. ', not a stream; replied on ' .. KEYS[7]
  replyKey = KEYS[7]
  kind = notStream(replyKey)
end
if kind then
  return redis.error_reply('WRONGTYPE key ' .. replyKey .. ' holds a ' .. kind .. ', not a stream: no reply can be written')
end
-- Whether `key` is a stream (or missing); if not, the reply says so with `field` and what is lost.
local function usable(key, field, name, lost)
  local keyKind = notStream(key)
  if not keyKind then return true end
  reply[#reply + 1] = field
  reply[#reply + 1] = name .. ' ' .. key .. ' holds a ' .. keyKind .. ', not a stream; ' .. lost
  return false
end
if chunkCount > 0 and not usable(KEYS[8], 'stream_error', 'the chunk stream', 'its last chunk was not written') then
  chunkCount = 0
end
if deadCount > 0 and not usable(KEYS[3], 'dead_letter_error', 'the dead-letter stream', 'the record was not kept') then
  deadCount = 0
end
local history = nil
if keep and mode == 'owned' then
  if usable(KEYS[4], 'history_error', 'the history stream', 'the request was not kept') then
    local entry = redis.call('XRANGE', KEYS[1], id, id)
    -- unpack() takes at most about 8000 values: a larger copy would fail after the reply.
    if #entry == 1 and #entry[1][2] > 7000 then
      reply[#reply + 1] = 'history_error'
      reply[#reply + 1] = 'the request has too many fields to keep in ' .. KEYS[4]
    elseif #entry == 1 then
      history = {'request', id}
      for _, value in ipairs(entry[1][2]) do history[#history + 1] = value end
    end
  end
end
local counters = {'replies:' .. status}
if errorCode ~= '' then counters[#counters + 1] = 'error:' .. errorCode end
if backend ~= '' then counters[#counters + 1] = 'backend:' .. backend .. ':' .. status end
local statsKind = redis.call('TYPE', KEYS[6])['ok']
if statsKind == 'hash' then
  for _, field in ipairs(counters) do
    local count = redis.call('HGET', KEYS[6], field)
    if count and not (string.match(count, '^%d+$') and #count < 18) then counters = {} end
  end
elseif statsKind ~= 'none' then
  counters = {}
end
add(replyKey, replyMax, reply)
for _, field in ipairs(counters) do redis.call('HINCRBY', KEYS[6], field, 1) end
if deadCount > 0 then
  local record = {}
  for i = first, first - 1 + deadCount do record[#record + 1] = ARGV[i] end
  add(KEYS[3], deadMax, record)
end
if chunkCount > 0 then
  local chunk = {}
  for i = chunkFirst, chunkFirst + chunkCount - 1 do chunk[#chunk + 1] = ARGV[i] end
  add(KEYS[8], chunkMax, chunk)
  redis.call('PEXPIRE', KEYS[8], chunkExpire)
end
if mode == 'lost' then
  -- Left the group unanswered, answered now: no second answer.
  redis.call('SET', KEYS[5], 'replied', 'PX', markerLifetime)
  return 1
end
redis.call('XACK', KEYS[1], group, id)
if history then
  add(KEYS[4], historyMax, history)
  if historyMinID ~= '' then redis.call('XTRIM', KEYS[4], 'MINID', '~', historyMinID) end
end
redis.call('XDEL', KEYS[1], id)
return 1
