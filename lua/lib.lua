-- Shared functions, prepended to every operation script in this folder (see
-- src/store/redis_store.rs). Not an operation on its own: it has no KEYS or ARGV.
--
-- Time always comes from the server (`TIME`), never from the caller, so every payguard replica
-- sees the same clock. Every key written gets a TTL.

-- Tolerance for float comparisons of token counts (refill accrues fractions).
local EPS = 1e-6

-- Server time in milliseconds, with microsecond fraction.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end

-- Milliseconds from a caller argument; Redis rejects PX 0, so at least 1.
local function arg_ms(v)
  local n = math.floor(tonumber(v) or 1)
  if n < 1 then n = 1 end
  return n
end

-- Reads `count` bucket specs from ARGV starting at `ai` (5 values each: capacity, refill_tokens,
-- refill_period_ms, cost, enforce 0/1) and their keys from KEYS starting at `ki`.
local function parse_buckets(ki, ai, count)
  local specs = {}
  for i = 1, count do
    local refill = tonumber(ARGV[ai + 1])
    if refill < 1 then refill = 1 end -- rule validation rejects 0; never divide by zero
    specs[i] = {
      key = KEYS[ki + i - 1],
      cap = tonumber(ARGV[ai]),
      refill = refill,
      period = arg_ms(ARGV[ai + 2]),
      cost = tonumber(ARGV[ai + 3]),
      enforce = ARGV[ai + 4] == '1',
    }
    ai = ai + 5
  end
  return specs, ki + count, ai
end

-- Tokens in a bucket at `now`: continuous refill since the last write, clamped to the current
-- capacity so that editing a rule's numbers keeps (but bounds) its state.
-- A missing bucket is full: its key expires exactly when it would have refilled.
local function bucket_tokens(b, now)
  local st = redis.call('HMGET', b.key, 't', 'ts')
  local t, ts = tonumber(st[1]), tonumber(st[2])
  if t == nil or ts == nil then return b.cap end
  local elapsed = now - ts
  if elapsed < 0 then elapsed = 0 end
  local tokens = t + elapsed * b.refill / b.period
  if tokens > b.cap then tokens = b.cap end
  return tokens
end

-- Milliseconds until `tokens` reach `target` (0 when already there).
local function bucket_wait(b, tokens, target)
  if tokens + EPS >= target then return 0 end
  return math.ceil((target - tokens) * b.period / b.refill)
end

-- Decides a list of buckets. Enforced buckets are debited all-or-nothing (and only in mode
-- 'take'; mode 'check' decides them without debiting), shadow buckets each on their own.
-- Returns a flat list (allowed, remaining, retry_after_ms, reset_after_ms per bucket) and whether
-- every enforced bucket held its cost.
local function take_buckets(specs, mode, now)
  local tokens = {}
  local enforced_ok = true
  for i, b in ipairs(specs) do
    tokens[i] = bucket_tokens(b, now)
    if b.enforce and tokens[i] + EPS < b.cost then enforced_ok = false end
  end
  local after = {} -- tokens left per key, should a key appear twice in one batch
  local out = {}
  for i, b in ipairs(specs) do
    local t = after[b.key] or tokens[i]
    local allowed = t + EPS >= b.cost
    if allowed and ((not b.enforce) or (enforced_ok and mode == 'take')) then
      t = t - b.cost
      if t < 0 then t = 0 end
      after[b.key] = t
      redis.call('HSET', b.key, 't', string.format('%.17g', t), 'ts', string.format('%.3f', now))
      redis.call('PEXPIRE', b.key, math.max(bucket_wait(b, t, b.cap), 1))
    end
    local retry = 0
    if not allowed then retry = bucket_wait(b, t, b.cost) end
    out[#out + 1] = allowed and 1 or 0
    out[#out + 1] = math.floor(t + EPS)
    out[#out + 1] = retry
    out[#out + 1] = bucket_wait(b, t, b.cap)
  end
  return out, enforced_ok
end

-- Reads `count` counter specs from ARGV starting at `ai` (3 values each: kind 's' sliding or
-- 'f' fixed, window_ms or ttl_ms, incr) and their keys from KEYS starting at `ki` (a sliding
-- counter has two keys: its event set and its running sum; a fixed counter one).
local function parse_counters(ki, ai, count)
  local specs = {}
  for i = 1, count do
    local c = { kind = ARGV[ai], ms = arg_ms(ARGV[ai + 1]), incr = tonumber(ARGV[ai + 2]) or 0 }
    c.key = KEYS[ki]
    ki = ki + 1
    if c.kind == 's' then
      c.sum_key = KEYS[ki]
      ki = ki + 1
    end
    specs[i] = c
    ai = ai + 3
  end
  return specs, ki, ai
end

-- Sliding window: a sorted set of events scored by time (µs), each member unique and ending in
-- `:<incr>` — `<time>:<seq>:<incr>`, or `<c.id>:<incr>` when the caller names the event (so it
-- can take it back, lua/uncount.lua) — plus a running sum so reading is O(expired events).
local function count_sliding(c, now, incr)
  local now_us = math.floor(now * 1000)
  local cutoff = string.format('%.0f', now_us - c.ms * 1000)
  local sum = tonumber(redis.call('GET', c.sum_key)) or 0
  local expired = redis.call('ZRANGEBYSCORE', c.key, '-inf', cutoff)
  for _, m in ipairs(expired) do
    sum = sum - (tonumber(string.match(m, ':(%d+)$')) or 0)
  end
  if #expired > 0 then redis.call('ZREMRANGEBYSCORE', c.key, '-inf', cutoff) end
  local card = redis.call('ZCARD', c.key)
  if card == 0 or sum < 0 then sum = 0 end
  if incr > 0 then
    -- Same µs twice implies nothing was trimmed in between, so the cardinality differs.
    local member
    if c.id then
      member = string.format('%s:%.0f', c.id, incr)
    else
      member = string.format('%.0f:%d:%.0f', now_us, card, incr)
    end
    redis.call('ZADD', c.key, string.format('%.0f', now_us), member)
    sum = sum + incr
    redis.call('PEXPIRE', c.key, c.ms)
    redis.call('SET', c.sum_key, string.format('%.0f', sum), 'PX', c.ms)
  elseif #expired > 0 then
    if card == 0 then
      redis.call('DEL', c.sum_key)
    else
      redis.call('SET', c.sum_key, string.format('%.0f', sum), 'KEEPTTL')
    end
  end
  return sum
end

-- Calendar window: the caller names the window in the key; kept `ms` after the last increment.
local function count_fixed(c, incr)
  if incr > 0 then
    local v = redis.call('INCRBY', c.key, incr)
    redis.call('PEXPIRE', c.key, c.ms)
    return v
  end
  return tonumber(redis.call('GET', c.key)) or 0
end

-- Adds `incr` (0 reads) to a counter and returns its value in the window afterwards.
local function count(c, now, incr)
  if c.kind == 's' then return count_sliding(c, now, incr) end
  return count_fixed(c, incr)
end

-- Set with per-member TTL: a sorted set scored by expiry (ms). Expired members are trimmed on
-- access; the key itself expires with its longest-lived member.
local function set_trim(key, now)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('%.0f', math.floor(now)))
end

local function set_contains(key, member, now)
  local score = tonumber(redis.call('ZSCORE', key, member))
  return score ~= nil and score > now
end

-- The store generation marker of this call's hash slot, `<instance id>:<fence unix ms>`, named
-- in KEYS by every script that reads it, with its arguments first in ARGV:
-- ARGV[1] instance id, ARGV[2] marker ttl_ms, ARGV[3] '1' when this payguard has not used the
-- slot before. A payguard creates the marker on its first use of a slot with fence 0 (nothing
-- lost); once it has used the slot, a missing marker means this Redis forgot its data (a restart
-- without persistence, a failover to a replica that lagged, FLUSHALL), and the marker is
-- recreated with the current time as fence: a nonce dated at or before the fence may have been
-- seen before the loss. Returns (lost, fence_ms); lost is true when this call recreated it.
local function store_generation(key, now)
  local v = redis.call('GET', key)
  if v then
    return false, tonumber(string.match(v, ':(%d+)$')) or 0
  end
  local ttl = arg_ms(ARGV[2])
  if ARGV[3] == '1' then
    redis.call('SET', key, ARGV[1] .. ':0', 'PX', ttl)
    return false, 0
  end
  local fence = math.floor(now)
  redis.call('SET', key, ARGV[1] .. ':' .. string.format('%.0f', fence), 'PX', ttl)
  return true, fence
end

-- Whether a nonce dated `ts` (unix seconds) is at or before the second of the fence.
local function before_fence(ts, fence_ms)
  return fence_ms > 0 and (tonumber(ts) or 0) <= math.floor(fence_ms / 1000)
end

-- Claims a nonce: true when fresh.
local function claim_nonce(key, ttl_ms)
  return redis.call('SET', key, '1', 'NX', 'PX', ttl_ms) ~= false
end
