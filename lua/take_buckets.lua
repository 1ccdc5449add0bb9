-- take_buckets: decides and debits token buckets atomically.
-- KEYS[1..n]  bucket hashes (fields t = tokens, ts = last write in ms)
-- ARGV[1]     mode: 'take' (debit enforced buckets all-or-nothing) or 'check' (decide enforced
--             buckets without debiting; used on Cluster after another slot's group refused)
-- ARGV[2]     n, the number of buckets
-- ARGV[3..]   per bucket: capacity, refill_tokens, refill_period_ms, cost, enforce (0/1)
-- Returns {enforced_ok, then per bucket: allowed, remaining, retry_after_ms, reset_after_ms}.
local specs = parse_buckets(1, 3, tonumber(ARGV[2]))
local out, enforced_ok = take_buckets(specs, ARGV[1], now_ms())
table.insert(out, 1, enforced_ok and 1 or 0)
return out
