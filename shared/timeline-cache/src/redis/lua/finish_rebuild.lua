-- ARGV: max, active_ms, complete ('1'/'0'), oldest pulled post (8 bytes or ''), pulled
-- entries (ascending, unique). The floor rules are those of `MemoryCache::finish_rebuild_now`.
local state, sorted, floor = load()
if not state then return 0 end
sorted, floor = normalize(state, sorted, floor)
local complete, pulled_from = ARGV[3] == '1', ARGV[4]
if pulled_from == '' then pulled_from = nil end
local old = floor
local function highest(a, b)
  if not a then return b end
  if not b or less(b, a) then return a end
  return b
end
if state ~= 'R' then
  if complete then
    -- Pushes landed since the rebuild began, so the union covers what the pull covers.
  elseif pulled_from then
    floor = highest(floor, pulled_from)
  else
    -- An incomplete pull that found nothing proves nothing: trust only the pushes.
    local front = nil
    if sorted > 0 then front = string.sub(redis.call('LINDEX', tl, 1), 1, 8) end
    floor = highest(floor, front)
  end
elseif complete then
  floor = nil
elseif pulled_from and floor and less(pulled_from, floor) then
  floor = pulled_from
end
-- A changed floor may leave sorted entries below it: have them all checked again.
if floor ~= old then sorted = 0 end
push(tl, ARGV, 5, #ARGV)
redis.call('LSET', tl, 0, header('R', sorted, floor))
normalize('R', sorted, floor)
redis.call('PEXPIRE', tl, ARGV[2])
return 1
