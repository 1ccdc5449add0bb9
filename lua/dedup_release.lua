-- dedup_release: drops a lease so the channel's next retry can claim the key.
-- KEYS[1]  dedup key
-- ARGV[1]  token of the caller's lease
-- Returns 1 when released, 0 when the token does not hold the lease.
if redis.call('GET', KEYS[1]) ~= 'lease:' .. ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
