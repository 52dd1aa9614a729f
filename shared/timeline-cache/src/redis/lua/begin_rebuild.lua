-- ARGV: max, rebuild_ms. 1 if a rebuilding timeline was created, 0 if one exists.
if redis.call('EXISTS', tl) == 1 then return 0 end
redis.call('RPUSH', tl, header('B', 0, nil))
redis.call('PEXPIRE', tl, ARGV[2])
return 1
