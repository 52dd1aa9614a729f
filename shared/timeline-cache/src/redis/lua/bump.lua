-- Moves the celebrity version. KEYS: the version. ARGV: the time in microseconds.
-- A version that is missing (a new, wiped or restarted Redis) starts from the clock, not
-- from zero: a process that held lists under version N before a restart must not meet N
-- again after it and take its old lists for current.
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('SET', KEYS[1], ARGV[1]) end
return redis.call('INCR', KEYS[1])
