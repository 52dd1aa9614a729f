-- ARGV: max, active_ms, limit, oldest_first ('1'/'0'), after (8 bytes or ''),
-- before (8 bytes or ''). Returns nil (absent or rebuilding) or {floor or '', the
-- entries ascending, concatenated}: one string to parse instead of one per entry, which
-- is most of a client's cost of a read. Refreshes the TTL.
local state, sorted, floor = load()
if state ~= 'R' then return false end
sorted, floor = normalize(state, sorted, floor)
redis.call('PEXPIRE', tl, ARGV[2])
local limit, oldest_first, after, before = tonumber(ARGV[3]), ARGV[4] == '1', ARGV[5], ARGV[6]
local lo, hi = 1, sorted
if after ~= '' then lo = search(1, sorted, function(e) return not less(after, e) end) end
if before ~= '' then hi = search(lo, sorted, function(e) return less(e, before) end) - 1 end
local entries = ''
if limit > 0 and lo <= hi then
  local from, to
  if oldest_first then
    from, to = lo, math.min(hi, lo + limit - 1)
  else
    from, to = math.max(lo, hi - limit + 1), hi
  end
  entries = table.concat(redis.call('LRANGE', tl, from, to))
end
return {floor or '', entries}
