-- set_remove: removes a member.
-- KEYS[1]  set
-- ARGV[1]  member
-- Returns 1 when the member was present and live, else 0.
local now = now_ms()
local live = set_contains(KEYS[1], ARGV[1], now)
redis.call('ZREM', KEYS[1], ARGV[1])
set_trim(KEYS[1], now)
return live and 1 or 0
