-- set_add: adds (or refreshes) a member with its own TTL.
-- KEYS[1]  set (sorted set scored by expiry ms)
-- ARGV[1]  member
-- ARGV[2]  ttl_ms
-- Returns 1.
local now = now_ms()
set_trim(KEYS[1], now)
redis.call('ZADD', KEYS[1], string.format('%.0f', math.floor(now) + arg_ms(ARGV[2])), ARGV[1])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], last[2])
return 1
