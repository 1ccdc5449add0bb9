-- count: adds to a windowed counter (or reads it when incr is 0).
-- KEYS[1]  counter key (sliding: sorted set of events; fixed: integer)
-- KEYS[2]  sliding only: running sum of the events
-- ARGV[1]  kind: 's' sliding or 'f' fixed
-- ARGV[2]  sliding: window_ms; fixed: ttl_ms after the last increment
-- ARGV[3]  incr
-- Returns the value in the window after the increment.
local specs = parse_counters(1, 1, 1)
return count(specs[1], now_ms(), specs[1].incr)
