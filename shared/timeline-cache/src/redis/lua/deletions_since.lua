-- The posts deleted since the deletion log stood at ARGV[2] (see read_model/mod.rs). KEYS
-- and the start of a missing log as in log_deletions.lua; ARGV: the time in microseconds,
-- the number asked about. Returns {number now, 1 and the post ids after it, oldest first}
-- or {number now, 0, {}} if the log no longer reaches back that far.
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SET', KEYS[1], ARGV[1])
  redis.call('SET', KEYS[3], ARGV[1])
  redis.call('DEL', KEYS[2])
end
local seq = redis.call('GET', KEYS[1])
local after = tonumber(ARGV[2])
if after < tonumber(redis.call('GET', KEYS[3]) or '0') or after > tonumber(seq) then
  return {seq, 0, {}}
end
return {seq, 1, redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[2], '+inf')}
