-- GET of every key in KEYS, as one string: per key a 4-byte big-endian length
-- (0xFFFFFFFF for a missing key) and the value. A page's posts are then one value for
-- the client to parse, not twenty. Single node only: the keys lie in many slots.
local out = {}
for i = 1, #KEYS do
  local v = redis.call('GET', KEYS[i])
  if v then
    out[#out + 1] = struct.pack('>I4', #v) .. v
  else
    out[#out + 1] = '\255\255\255\255'
  end
end
return table.concat(out)
