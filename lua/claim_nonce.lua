-- claim_nonce: claims a nonce key once.
-- KEYS[1]  nonce key
-- ARGV[1]  ttl_ms
-- Returns 1 when the nonce was fresh, 0 when it was already claimed.
return claim_nonce(KEYS[1], arg_ms(ARGV[1])) and 1 or 0
