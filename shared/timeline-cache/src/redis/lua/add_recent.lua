-- An event: an author made posts. KEYS: the author's recent list, its fill token.
-- ARGV: depth, then post ids (8 bytes each). The list is a flag byte ('C' complete, 'T'
-- cut at the depth) and ids newest first. Cancels any fill in progress; changes the list
-- only if it is cached. Ids compare as two 32-bit halves: Lua's `<` on strings is
-- `strcoll`, which depends on the server's locale.
redis.call('DEL', KEYS[2])
local list = redis.call('GET', KEYS[1])
if not list then return 0 end
local depth = tonumber(ARGV[1])
local flag = string.sub(list, 1, 1)
local ids, seen = {}, {}
local function add(id)
  if not seen[id] then
    seen[id] = true
    ids[#ids + 1] = id
  end
end
for i = 2, #list, 8 do add(string.sub(list, i, i + 7)) end
for i = 2, #ARGV do add(ARGV[i]) end
table.sort(ids, function(a, b)
  local a1, a2 = struct.unpack('>I4I4', a)
  local b1, b2 = struct.unpack('>I4I4', b)
  return a1 > b1 or (a1 == b1 and a2 > b2)
end)
if #ids > depth then
  for i = #ids, depth + 1, -1 do ids[i] = nil end
  flag = 'T'
end
redis.call('SET', KEYS[1], flag .. table.concat(ids), 'KEEPTTL')
return 1
