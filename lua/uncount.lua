-- uncount: takes back what one guard.lua call added to counters (Redis Cluster only: the counters
-- of one hash slot were incremented, then another slot refused the request, so the request as a
-- whole was refused and counts nothing).
-- KEYS     per counter: sliding: event set + sum; fixed: the counter
-- ARGV[1]  n, the number of counters, followed by 4 values per counter:
--          kind ('s' sliding / 'f' fixed), window_ms or ttl_ms, incr, event member (sliding)
-- Returns per counter its value in the window afterwards.
local n = tonumber(ARGV[1])
local now = now_ms()
local ki, ai = 1, 2
local out = {}
for _ = 1, n do
  local c = { kind = ARGV[ai], ms = arg_ms(ARGV[ai + 1]), key = KEYS[ki] }
  local incr = tonumber(ARGV[ai + 2]) or 0
  local member = ARGV[ai + 3]
  ai = ai + 4
  ki = ki + 1
  if c.kind == 's' then
    c.sum_key = KEYS[ki]
    ki = ki + 1
    if redis.call('ZREM', c.key, member) == 1 then
      local sum = (tonumber(redis.call('GET', c.sum_key)) or 0) - incr
      if sum < 0 then sum = 0 end
      redis.call('SET', c.sum_key, string.format('%.0f', sum), 'KEEPTTL')
    end
    out[#out + 1] = count(c, now, 0)
  else
    local v = tonumber(redis.call('GET', c.key)) or 0
    if v > 0 then
      if incr > v then incr = v end
      v = redis.call('DECRBY', c.key, incr)
    end
    out[#out + 1] = v
  end
end
return out
