-- The changes since the change log stood at ARGV[2] (after change_log.lua).
-- ARGV: the time in microseconds, the number asked about. Returns {number now, 1 and the
-- entries after it, oldest first} or {number now, 0, {}} if the log no longer reaches
-- back that far.
start_log(ARGV[1])
local seq = redis.call('GET', KEYS[1])
local after = tonumber(ARGV[2])
if after < tonumber(redis.call('GET', KEYS[3]) or '0') or after > tonumber(seq) then
  return {seq, 0, {}}
end
return {seq, 1, redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[2], '+inf')}
