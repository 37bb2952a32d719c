-- Removes the consumers with nothing pending, idle for at least the minimum, in one step
-- (RequestStream.deleteIdleConsumers); returns the names removed. A missing stream or group
-- removes nothing. XINFO CONSUMERS rows are flat name/value arrays (RESP2, as scripts see them).
--
-- KEYS: request stream.
-- ARGV: group, minimum idle ms, a name to keep ("" none), the only name to consider ("" all).

if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
local ok, consumers = pcall(redis.call, 'XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if not ok then return {} end
local minIdle, keep, only = tonumber(ARGV[2]), ARGV[3], ARGV[4]
local removed = {}
for _, row in ipairs(consumers) do
  local info = {}
  for i = 1, #row, 2 do info[row[i]] = row[i + 1] end
  local name = info['name']
  if name ~= keep and (only == '' or name == only) and info['pending'] == 0 and info['idle'] >= minIdle then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], name)
    removed[#removed + 1] = name
  end
end
return removed
