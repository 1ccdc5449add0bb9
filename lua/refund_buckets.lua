-- refund_buckets: gives tokens back (Cluster only: enforced buckets of one hash slot were taken,
-- then a bucket in another slot refused, so the request as a whole was refused).
-- KEYS[1..n]  bucket hashes
-- ARGV[1]     n, the number of buckets
-- ARGV[2..]   per bucket: capacity, refill_tokens, refill_period_ms, cost, enforce (ignored)
-- Returns per bucket: remaining, reset_after_ms.
local specs = parse_buckets(1, 2, tonumber(ARGV[1]))
local now = now_ms()
local out = {}
for _, b in ipairs(specs) do
  local t = bucket_tokens(b, now) + b.cost
  if t > b.cap then t = b.cap end
  redis.call('HSET', b.key, 't', string.format('%.17g', t), 'ts', string.format('%.3f', now))
  redis.call('PEXPIRE', b.key, math.max(bucket_wait(b, t, b.cap), 1))
  out[#out + 1] = math.floor(t + EPS)
  out[#out + 1] = bucket_wait(b, t, b.cap)
end
return out
