-- wrk script: sends pre-generated requests, one per line of a file, each line used once before any
-- line repeats (so every request is a distinct event for dedup, or carries a fresh nonce, as long
-- as the file has more lines than the run sends; `done` reports how often a file of more than
-- one line wrapped; a one-line file repeats by design).
--
-- Usage: wrk -t THREADS ... -s scripts/bench/requests.lua URL -- FILE THREADS [RATE [METHOD]]
--   FILE    lines of `Header: value` fields, then the raw body, all separated by tabs
--           (examples/bench_stripe_notifications.rs and bench_signed_orders.rs write them);
--           `-` for no file: a bodiless request to URL
--   THREADS wrk's -t, so each thread takes every nth line
--   RATE    total requests per second to pace at (0 or absent: as fast as the connections go)
--   METHOD  POST by default
-- Requests are formatted in `init`, which wrk runs before it starts the clock.
--
-- Pacing: requests are scheduled at fixed intervals from the start of the run; `delay()` holds a
-- connection until its next request's slot. wrk measures latency from when a request is sent,
-- so a request sent after its slot (all connections busy: the proxy fell behind) would hide
-- queueing delay; `done` counts such late sends, and a paced run is trustworthy when it is 0.

local ffi = require("ffi")
ffi.cdef[[
  typedef struct { long tv_sec; long tv_nsec; } pg_timespec;
  int clock_gettime(int clk_id, pg_timespec *tp);
]]
local ts = ffi.new("pg_timespec")
local function now_ms()
   ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
   return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local threads = {}
local next_id = 0

function setup(thread)
   thread:set("id", next_id)
   next_id = next_id + 1
   table.insert(threads, thread)
end

local requests = {}
local count = 0
local i = 0
wraps = 0
late = 0
local interval = nil -- ms between this thread's requests when paced
local next_slot = nil

local function paced_delay()
   local now = now_ms()
   if not next_slot then next_slot = now end
   local wait = next_slot - now
   next_slot = next_slot + interval
   if wait < -1 then late = late + 1 end
   if wait <= 0 then return 0 end
   return math.floor(wait)
end

function init(args)
   local file = args[1] or error("usage: wrk ... -s requests.lua URL -- FILE THREADS [RATE [METHOD]]")
   local nthreads = tonumber(args[2]) or 1
   local rate = tonumber(args[3]) or 0
   local method = args[4] or "POST"
   if rate > 0 then
      interval = 1000 * nthreads / rate
      -- Only a paced run defines `delay`: wrk checks for it after `init`, and when it exists every
      -- request goes through a timer event and two epoll_ctl calls, even for a delay of 0.
      delay = paced_delay
   end
   local id = tonumber(wrk.thread:get("id")) or 0
   if file == "-" then
      count = 1
      requests[1] = wrk.format(method, nil, {}, nil)
      return
   end
   local line_no = 0
   for line in io.lines(file) do
      if line_no % nthreads == id then
         local headers = {}
         local fields = {}
         for field in string.gmatch(line, "[^\t]+") do
            table.insert(fields, field)
         end
         local body = table.remove(fields)
         for _, field in ipairs(fields) do
            local name, value = string.match(field, "^([^:]+):%s*(.*)$")
            headers[name] = value
         end
         count = count + 1
         requests[count] = wrk.format(method, nil, headers, body)
      end
      line_no = line_no + 1
   end
   if count == 0 then
      error("no requests for thread " .. id .. " in " .. file)
   end
end

function request()
   i = i + 1
   if i > count then
      i = 1
      if count > 1 then
         wraps = wraps + 1
      end
   end
   return requests[i]
end

function done(summary, latency, requests)
   local total_wraps, total_late = 0, 0
   for _, t in ipairs(threads) do
      total_wraps = total_wraps + (tonumber(t:get("wraps")) or 0)
      total_late = total_late + (tonumber(t:get("late")) or 0)
   end
   io.write(string.format("requests.lua: input wrapped %d times\n", total_wraps))
   io.write(string.format("requests.lua: %d requests sent late\n", total_late))
end
