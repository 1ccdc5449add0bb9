-- set_members: live members with their remaining TTL; trims expired ones.
-- KEYS[1]  set
-- Returns {{member, remaining_ms}, ...}.
local now = now_ms()
set_trim(KEYS[1], now)
local flat = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local out = {}
for i = 1, #flat, 2 do
  out[#out + 1] = {flat[i], math.max(math.floor(tonumber(flat[i + 1]) - now), 0)}
end
return out
