-- Appends changes to the change log (after change_log.lua). ARGV: the time in
-- microseconds, how many entries to keep, then the entries (see read_model.rs).
start_log(ARGV[1])
local seq = 0
for i = 3, #ARGV do
  seq = redis.call('INCR', KEYS[1])
  redis.call('ZADD', KEYS[2], seq, ARGV[i])
end
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[2])
if over > 0 then
  -- The floor: the number of the newest entry trimmed away.
  local cut = redis.call('ZRANGE', KEYS[2], over - 1, over - 1, 'WITHSCORES')
  redis.call('SET', KEYS[3], string.format('%d', tonumber(cut[2])))
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, over - 1)
end
return seq
