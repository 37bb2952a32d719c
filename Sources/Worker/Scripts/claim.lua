-- XAUTOCLAIM, and each claimed entry's delivery count from the pending list, in one atomic
-- step (RequestStream.claimIdle; its answer is read by ClaimScriptReply).
--
-- KEYS: request stream.
-- ARGV: group, consumer, minimum idle ms, cursor, count, lost-marker prefix, lost-marker
-- lifetime ms.
--
-- Returns {next cursor, {{id, fields, deliveries}...}, {deleted IDs...}}. Each deleted entry
-- XAUTOCLAIM dropped from the pending list left the group unanswered: it is marked `lost` (the
-- marker shares the request stream's hash tag, so its slot).

local claimed = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], 'COUNT', ARGV[5])
local entries = {}
for _, entry in ipairs(claimed[2]) do
  if entry then
    local pending = redis.call('XPENDING', KEYS[1], ARGV[1], entry[1], entry[1], 1)
    entries[#entries + 1] = {entry[1], entry[2], pending[1][4]}
  end
end
local deleted = claimed[3] or {}
for _, id in ipairs(deleted) do
  redis.call('SET', ARGV[6] .. id, 'lost', 'PX', ARGV[7], 'NX')
end
return {claimed[1], entries, deleted}
