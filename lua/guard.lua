-- guard: everything a guarded request asks of the store, in one round trip (one EVAL
-- per request). Order: generation marker → deny set → nonce → buckets → counters; a denied
-- member stops everything, a replayed nonce (or one dated before a store data loss) stops
-- buckets and counters, and when an enforced bucket refuses, counters are only read.
-- KEYS     generation marker of this call's hash slot (lib.lua `store_generation`),
--          [deny set, if ARGV[4] = 1] [nonce, if ARGV[6] = 1] bucket hashes...
--          counter keys... (sliding: event set + sum; fixed: one key)
-- ARGV[1..3]  the marker's arguments (instance id, marker ttl_ms, first use of the slot)
-- ARGV[4]  1 when a deny check is asked, else 0
-- ARGV[5]  deny member (client IP)
-- ARGV[6]  1 when a nonce is to be claimed, else 0
-- ARGV[7]  nonce ttl_ms
-- ARGV[8]  the request's signed timestamp, unix seconds: a nonce dated at or before the second
--          of the marker's fence is refused unclaimed (it may have been seen before the loss)
-- ARGV[9]  number of buckets, followed by 5 values per bucket:
--          capacity, refill_tokens, refill_period_ms, cost, enforce (0/1)
-- ARGV[k]  number of counters, followed by 3 values per counter:
--          kind ('s' sliding / 'f' fixed), window_ms or ttl_ms, incr
-- ARGV[m]  optional (Redis Cluster, one slot's part of a batch): an operation id; sliding
--          counter events are then named `<id>:<i>:<incr>` (i = the counter's position here) so
--          that lua/uncount.lua can take them back
-- Returns {lost, fence_ms, denied, nonce (0 fresh, 1 replayed, 2 dated before the fence), nb,
--          nb × (allowed, remaining, retry_after_ms, reset_after_ms), nc, nc × value}; lost is 1
--          when this call found the store's data lost; nb and nc are 0 when stopped earlier.
local now = now_ms()
local lost, fence = store_generation(KEYS[1], now)
lost = lost and 1 or 0
local ki = 2
if ARGV[4] == '1' then
  local denied = set_contains(KEYS[ki], ARGV[5], now)
  ki = ki + 1
  if denied then return {lost, fence, 1, 0, 0, 0} end
end
if ARGV[6] == '1' then
  if before_fence(ARGV[8], fence) then return {lost, fence, 0, 2, 0, 0} end
  local fresh = claim_nonce(KEYS[ki], arg_ms(ARGV[7]))
  ki = ki + 1
  if not fresh then return {lost, fence, 0, 1, 0, 0} end
end
local nb = tonumber(ARGV[9])
local buckets, ai
buckets, ki, ai = parse_buckets(ki, 10, nb)
local decisions, enforced_ok = take_buckets(buckets, 'take', now)
local nc = tonumber(ARGV[ai])
local counters, _, after = parse_counters(ki, ai + 1, nc)
local op = ARGV[after]
if op then
  for i, c in ipairs(counters) do c.id = op .. ':' .. i end
end
local out = {lost, fence, 0, 0, nb}
for _, v in ipairs(decisions) do out[#out + 1] = v end
out[#out + 1] = nc
for _, c in ipairs(counters) do
  local incr = c.incr
  if not enforced_ok then incr = 0 end
  out[#out + 1] = count(c, now, incr)
end
return out
