-- dedup_complete: marks a claimed dedup key done, if the caller still holds the lease.
-- KEYS[1]  dedup key
-- ARGV[1]  token of the caller's lease
-- ARGV[2]  keep_ms (how long 'done' is remembered)
-- Returns 1 when marked done, 0 when the token no longer holds the lease (key left as is).
if redis.call('GET', KEYS[1]) ~= 'lease:' .. ARGV[1] then return 0 end
redis.call('SET', KEYS[1], 'done', 'PX', arg_ms(ARGV[2]))
return 1
