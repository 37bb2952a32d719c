-- The fence of a streamed answer (AnswerStream): writes chunks only while this consumer owns
-- the entry (it is pending on this consumer), or, for an entry deleted and taken out of the
-- group, while it is unanswered (its marker says `lost`).
--
-- KEYS: request stream, chunk stream, lost-entry marker.
-- ARGV: group, entry ID, consumer, chunk stream max length (0 none), expiry ms to set (0 leaves
-- it), then for each chunk its field count and fields.
--
-- Returns the number of chunks written, or -1 when the writer is fenced off: another consumer
-- took the entry over (and writes its own reset next) or the entry was answered. So a stalled
-- worker's late chunks can never land after its heir's reset. A chunk key of the wrong type
-- fails at the first XADD, before any write.

local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #pending > 0 then
  if pending[1][2] ~= ARGV[3] then return -1 end
elseif redis.call('GET', KEYS[3]) ~= 'lost' then
  return -1
end
local maxLength, expire = tonumber(ARGV[4]), tonumber(ARGV[5])
local i, written = 6, 0
while i <= #ARGV do
  local count = tonumber(ARGV[i])
  local fields = {}
  for j = i + 1, i + count do fields[#fields + 1] = ARGV[j] end
  if maxLength > 0 then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', maxLength, '*', unpack(fields))
  else
    redis.call('XADD', KEYS[2], '*', unpack(fields))
  end
  written = written + 1
  i = i + count + 1
end
if expire > 0 then redis.call('PEXPIRE', KEYS[2], expire) end
return written
