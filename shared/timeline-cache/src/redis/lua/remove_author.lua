-- ARGV: max, author (8 bytes). Returns how many entries were removed.
local state, sorted, floor = load()
if not state then return 0 end
sorted, floor = normalize(state, sorted, floor)
local author = ARGV[2]
local all = redis.call('LRANGE', tl, 1, -1)
local keep = {}
for i = 1, #all do
  if string.sub(all[i], 9, 16) ~= author then keep[#keep + 1] = all[i] end
end
if #keep == #all then return 0 end
redis.call('LTRIM', tl, 0, 0)
push(tl, keep, 1, #keep)
redis.call('LSET', tl, 0, header(state, #keep, floor))
return #all - #keep
