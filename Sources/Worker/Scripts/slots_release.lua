-- Gives leases back (PoolSlotLedger.release).
--
-- KEYS: the sorted set of each lease, one key per lease.
-- ARGV: the ID of each lease, in the order of KEYS.

for i = 1, #KEYS do
  redis.call('ZREM', KEYS[i], ARGV[i])
end
return #KEYS
