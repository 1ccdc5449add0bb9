-- generation: reads (and renews) the store generation marker of one hash slot, for the health
-- check and payguard's first use of a slot (lib.lua `store_generation`).
-- KEYS[1]  generation marker
-- ARGV[1]  instance id, ARGV[2] marker ttl_ms, ARGV[3] '1' on first use of the slot
-- Returns {lost (1 when this call found the store's data lost), fence_ms}.
local lost, fence = store_generation(KEYS[1], now_ms())
if not lost then redis.call('PEXPIRE', KEYS[1], arg_ms(ARGV[2])) end
return {lost and 1 or 0, fence}
