-- set_contains: whether a live member is in the set (read only).
-- KEYS[1]  set
-- ARGV[1]  member
-- Returns 1 or 0.
return set_contains(KEYS[1], ARGV[1], now_ms()) and 1 or 0
