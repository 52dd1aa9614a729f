-- Shared by the change log's scripts (see read_model/mod.rs). KEYS: the log's number,
-- the log (a sorted set: entries scored by number), its floor.
-- A missing number (a new, wiped or restarted Redis) starts from the clock (`now`, in
-- microseconds), like the celebrity version, with the floor there too: a holder from
-- before cannot pass for current.
local function start_log(now)
  if redis.call('EXISTS', KEYS[1]) == 0 then
    redis.call('SET', KEYS[1], now)
    redis.call('SET', KEYS[3], now)
    redis.call('DEL', KEYS[2])
  end
end
