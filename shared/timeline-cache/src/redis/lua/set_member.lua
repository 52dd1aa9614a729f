-- An event on a list of 8-byte ids (a reader's followees, the celebrities).
-- KEYS: the list, its fill token. ARGV: id (8 bytes), '1' to add or '0' to remove.
-- Cancels any fill in progress; changes the list only if it is cached. Returns 1 if it
-- changed.
redis.call('DEL', KEYS[2])
local list = redis.call('GET', KEYS[1])
if not list then return 0 end
local id = ARGV[1]
-- Plain find, then keep only a match on an 8-byte boundary.
local at, from = nil, 1
while true do
  local i = string.find(list, id, from, true)
  if not i then break end
  if (i - 1) % 8 == 0 then
    at = i
    break
  end
  from = i + 1
end
if ARGV[2] == '1' then
  if at then return 0 end
  redis.call('APPEND', KEYS[1], id)
  return 1
end
if not at then return 0 end
redis.call('SET', KEYS[1], string.sub(list, 1, at - 1) .. string.sub(list, at + 8), 'KEEPTTL')
return 1
