-- Refreshes the entries still pending on this consumer; returns those pending on another
-- (RequestStream.touch). An entry deleted from the stream is left alone: Redis 7's XCLAIM would
-- drop it from the pending list, and the reply for it would then find it no longer ours.
--
-- KEYS: request stream.
-- ARGV: group, consumer, entry IDs...

local lost = {}
for i = 3, #ARGV do
  local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #pending > 0 then
    if pending[1][2] ~= ARGV[2] then
      lost[#lost + 1] = ARGV[i]
    elseif #redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i]) > 0 then
      redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    end
  end
end
return lost
