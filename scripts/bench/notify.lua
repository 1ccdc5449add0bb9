-- wrk script: POSTs pre-generated notifications, one per request, each line of the input file
-- used once before any line repeats (so every request is a distinct event for dedup, as long as
-- the file has more lines than the run sends; `done` reports how often a file of more than one
-- line wrapped; a one-line file is the duplicate-only run and repeats by design).
--
-- Usage: wrk -t THREADS ... -s scripts/bench/notify.lua URL -- FILE THREADS
-- FILE lines: `Header: value` fields, then the raw body, all separated by tabs
-- (examples/bench_stripe_notifications.rs writes them). Requests are formatted in `init`, which
-- wrk runs before it starts the clock.

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

function init(args)
   local file = args[1] or error("usage: wrk -t THREADS ... -s notify.lua URL -- FILE THREADS")
   -- Each thread takes every nth line, so threads never send the same notification.
   local nthreads = tonumber(args[2]) or 1
   local id = tonumber(wrk.thread:get("id")) or 0
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
         requests[count] = wrk.format("POST", nil, headers, body)
      end
      line_no = line_no + 1
   end
   if count == 0 then
      error("no notifications for thread " .. id .. " in " .. file)
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
   local total = 0
   for _, t in ipairs(threads) do
      total = total + (tonumber(t:get("wraps")) or 0)
   end
   io.write(string.format("notify.lua: input wrapped %d times\n", total))
end
