-- ARGV: max, post (8 bytes). Returns 1 if removed.
local state, sorted, floor = load()
if not state then return 0 end
sorted, floor = normalize(state, sorted, floor)
local post = ARGV[2]
local at = search(1, sorted, function(e) return less(e, post) end)
if at > sorted then return 0 end
local e = redis.call('LINDEX', tl, at)
if string.sub(e, 1, 8) ~= post then return 0 end
redis.call('LREM', tl, 1, e)
redis.call('LSET', tl, 0, header(state, sorted - 1, floor))
return 1
