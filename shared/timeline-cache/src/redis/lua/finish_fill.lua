-- The end of a fill. KEYS: the collection, its fill token. ARGV: token, value, TTL in
-- milliseconds. Writes only if the token is still there: an event since the fill began
-- removed it, and the fetched value may predate that event. Returns 1 if written.
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[2])
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
