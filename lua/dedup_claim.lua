-- dedup_claim: claims a notification dedup key with a lease.
-- KEYS[1]  generation marker of the dedup key's hash slot (lib.lua `store_generation`)
-- KEYS[2]  dedup key; value 'lease:<token>' while claimed, 'done' once completed
-- KEYS[3]  optional: the dedup key of an event that supersedes this one (a payment.pending is
--          late once the order's payment.succeeded is claimed or done); then nothing is claimed
-- ARGV[1..3]  the marker's arguments (instance id, marker ttl_ms, first use of the slot)
-- ARGV[4]  token (random, proves ownership of the lease)
-- ARGV[5]  lease_ms
-- Returns 'claimed', 'inflight' (another live lease), 'done' or 'superseded'; prefixed with
-- 'lost:<fence_ms>:' when this call found the store's data lost. A claim after a loss is still
-- taken: the dedup record it would have met is gone, so the backend's own idempotency by event id
-- is what stops a second delivery.
local prefix = ''
local lost, fence = store_generation(KEYS[1], now_ms())
if lost then prefix = string.format('lost:%.0f:', fence) end
if KEYS[3] and redis.call('EXISTS', KEYS[3]) == 1 then return prefix .. 'superseded' end
local v = redis.call('GET', KEYS[2])
if v == 'done' then return prefix .. 'done' end
if v then return prefix .. 'inflight' end
redis.call('SET', KEYS[2], 'lease:' .. ARGV[4], 'PX', arg_ms(ARGV[5]))
return prefix .. 'claimed'
