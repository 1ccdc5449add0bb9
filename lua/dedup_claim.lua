-- dedup_claim: claims a notification dedup key with a lease.
-- KEYS[1]  dedup key; value 'lease:<token>' while claimed, 'done' once completed
-- KEYS[2]  optional: the dedup key of an event that supersedes this one (a payment.pending is
--          late once the order's payment.succeeded is claimed or done); then nothing is claimed
-- ARGV[1]  token (random, proves ownership of the lease)
-- ARGV[2]  lease_ms
-- Returns 'claimed', 'inflight' (another live lease), 'done' or 'superseded'.
if KEYS[2] and redis.call('EXISTS', KEYS[2]) == 1 then return 'superseded' end
local v = redis.call('GET', KEYS[1])
if v == 'done' then return 'done' end
if v then return 'inflight' end
redis.call('SET', KEYS[1], 'lease:' .. ARGV[1], 'PX', arg_ms(ARGV[2]))
return 'claimed'
