-- guard: everything a guarded request asks of the store, in one round trip (one EVAL
-- per request). Order: deny set → nonce → buckets → counters; a denied
-- member stops everything, a replayed nonce stops buckets and counters, and when an enforced
-- bucket refuses, counters are only read.
-- KEYS     [deny set, if ARGV[1] = 1] [nonce, if ARGV[3] = 1] bucket hashes...
--          counter keys... (sliding: event set + sum; fixed: one key)
-- ARGV[1]  1 when a deny check is asked, else 0
-- ARGV[2]  deny member (client IP)
-- ARGV[3]  1 when a nonce is to be claimed, else 0
-- ARGV[4]  nonce ttl_ms
-- ARGV[5]  number of buckets, followed by 5 values per bucket:
--          capacity, refill_tokens, refill_period_ms, cost, enforce (0/1)
-- ARGV[k]  number of counters, followed by 3 values per counter:
--          kind ('s' sliding / 'f' fixed), window_ms or ttl_ms, incr
-- ARGV[m]  optional (Redis Cluster, one slot's part of a batch): an operation id; sliding
--          counter events are then named `<id>:<i>:<incr>` (i = the counter's position here) so
--          that lua/uncount.lua can take them back
-- Returns {denied, replayed, nb, nb × (allowed, remaining, retry_after_ms, reset_after_ms),
--          nc, nc × value}; nb and nc are 0 when stopped earlier.
local now = now_ms()
local ki = 1
if ARGV[1] == '1' then
  local denied = set_contains(KEYS[ki], ARGV[2], now)
  ki = ki + 1
  if denied then return {1, 0, 0, 0} end
end
if ARGV[3] == '1' then
  local fresh = claim_nonce(KEYS[ki], arg_ms(ARGV[4]))
  ki = ki + 1
  if not fresh then return {0, 1, 0, 0} end
end
local nb = tonumber(ARGV[5])
local buckets, ai
buckets, ki, ai = parse_buckets(ki, 6, nb)
local decisions, enforced_ok = take_buckets(buckets, 'take', now)
local nc = tonumber(ARGV[ai])
local counters, _, after = parse_counters(ki, ai + 1, nc)
local op = ARGV[after]
if op then
  for i, c in ipairs(counters) do c.id = op .. ':' .. i end
end
local out = {0, 0, nb}
for _, v in ipairs(decisions) do out[#out + 1] = v end
out[#out + 1] = nc
for _, c in ipairs(counters) do
  local incr = c.incr
  if not enforced_ok then incr = 0 end
  out[#out + 1] = count(c, now, incr)
end
return out
