-- Helpers shared by every script. `KEYS[1]` is the timeline, `ARGV[1]` is `max_entries`.
--
-- Post ids are compared as two 32-bit halves (`struct.unpack`): Lua's `<` on strings is
-- `strcoll`, and Redis sets `LC_COLLATE` from its environment.
local tl = KEYS[1]
local max = tonumber(ARGV[1])

-- post(a) < post(b): the first 8 bytes of each, big-endian.
local function less(a, b)
  local a1, a2 = struct.unpack('>I4I4', a)
  local b1, b2 = struct.unpack('>I4I4', b)
  return a1 < b1 or (a1 == b1 and a2 < b2)
end

local function header(state, sorted, floor)
  return struct.pack('>c1I4', state, sorted) .. (floor or '')
end

-- state, sorted, floor; nil if there is no timeline.
local function load()
  local h = redis.call('LINDEX', tl, 0)
  if not h then return nil end
  local state, sorted = struct.unpack('>c1I4', h)
  local floor = nil
  if #h >= 13 then floor = string.sub(h, 6, 13) end
  return state, sorted, floor
end

local function push(key, items, from, to)
  for i = from, to, 1000 do
    redis.call('RPUSH', key, unpack(items, i, math.min(i + 999, to)))
  end
end

-- First index in [lo, hi] whose element is not `before(element)`, hi + 1 if none.
local function search(lo, hi, before)
  hi = hi + 1
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if before(redis.call('LINDEX', tl, mid)) then lo = mid + 1 else hi = mid end
  end
  return lo
end

-- Sorts parallel arrays (post high half, low half, entry) by post. Insertion sort:
-- pushes arrive nearly in order, so that is about one comparison each; a shuffled batch
-- (a backfill) falls back to quicksort.
local function sort(H, L, E)
  local n, shifts = #H, 0
  for i = 2, n do
    local h, l, e = H[i], L[i], E[i]
    local j = i - 1
    while j >= 1 and (h < H[j] or (h == H[j] and l < L[j])) do
      H[j + 1], L[j + 1], E[j + 1] = H[j], L[j], E[j]
      j = j - 1
    end
    H[j + 1], L[j + 1], E[j + 1] = h, l, e
    shifts = shifts + (i - 1 - j)
    if shifts > 8 * n then
      local recs = {}
      for k = 1, n do recs[k] = {H[k], L[k], E[k]} end
      table.sort(recs, function(a, b) return a[1] < b[1] or (a[1] == b[1] and a[2] < b[2]) end)
      for k = 1, n do H[k], L[k], E[k] = recs[k][1], recs[k][2], recs[k][3] end
      return
    end
  end
end

-- Folds the raw pushes into the sorted run, drops what is below the floor, trims to
-- `max` (raising the floor) and writes the header. Returns sorted, floor.
local function normalize(state, sorted, floor)
  -- The last sorted entry (if any) and the raw pushes after it, in one call.
  local raw = redis.call('LRANGE', tl, math.max(sorted, 1), -1)
  local ph, pl
  if sorted > 0 then
    ph, pl = struct.unpack('>I4I4', table.remove(raw, 1))
  elseif floor then
    ph, pl = struct.unpack('>I4I4', floor)
    pl = pl - 1
  end
  local len = sorted + #raw
  if sorted == len and sorted <= max then return sorted, floor end
  if sorted < len then
    -- Find the first push that does not continue the ascending run (with no run, the
    -- first one below the floor). Usually there is none: then the pushes are counted in.
    local bad = nil
    for i = 1, #raw do
      local h, l = struct.unpack('>I4I4', raw[i])
      if ph and (h < ph or (h == ph and l <= pl)) then
        bad = i
        break
      end
      ph, pl = h, l
    end
    if bad then
      -- Positions 1 .. top ascend (the run, then the pushes before `bad`). Everything
      -- from the first of them not older than the oldest later push is re-sorted.
      local top = sorted + bad - 1
      local H, L, E = {}, {}, {}
      local mh, ml
      for i = bad, #raw do
        local h, l = struct.unpack('>I4I4', raw[i])
        H[#H + 1], L[#L + 1], E[#E + 1] = h, l, raw[i]
        if not mh or h < mh or (h == mh and l < ml) then mh, ml = h, l end
      end
      local function older(p)
        local e
        if p > sorted then e = raw[p - sorted] else e = redis.call('LINDEX', tl, p) end
        local h, l = struct.unpack('>I4I4', e)
        return h < mh or (h == mh and l < ml)
      end
      -- Gallop back from `top` (not older: the push at `bad` is at most its entry), then
      -- bisect; the answer is usually a few pushes back.
      local from = 1
      if top > 0 then
        local lo, hi, step = 0, top, 1
        while hi - step >= 1 do
          if older(hi - step) then
            lo = hi - step
            break
          end
          hi = hi - step
          step = step * 2
        end
        while hi - lo > 1 do
          local mid = math.floor((lo + hi) / 2)
          if older(mid) then lo = mid else hi = mid end
        end
        from = hi
      end
      local RH, RL, RE = {}, {}, {}
      local function take(e)
        local h, l = struct.unpack('>I4I4', e)
        RH[#RH + 1], RL[#RL + 1], RE[#RE + 1] = h, l, e
      end
      if from <= sorted then
        local run = redis.call('LRANGE', tl, from, sorted)
        for i = 1, #run do take(run[i]) end
      end
      for i = math.max(1, from - sorted), bad - 1 do take(raw[i]) end
      for i = 1, #H do
        RH[#RH + 1], RL[#RL + 1], RE[#RE + 1] = H[i], L[i], E[i]
      end
      sort(RH, RL, RE)
      -- Drop repeats and anything below the floor.
      local fh, fl
      if floor then fh, fl = struct.unpack('>I4I4', floor) end
      local out, qh, ql = {}, nil, nil
      for i = 1, #RH do
        local h, l = RH[i], RL[i]
        if not (qh == h and ql == l) and not (fh and (h < fh or (h == fh and l < fl))) then
          out[#out + 1] = RE[i]
          qh, ql = h, l
        end
      end
      redis.call('LTRIM', tl, 0, from - 1)
      push(tl, out, 1, #out)
      len = from - 1 + #out
    end
    sorted = len
  end
  if sorted > max then
    local drop = sorted - max
    floor = string.sub(redis.call('LINDEX', tl, drop + 1), 1, 8)
    -- Keeps the last dropped entry at index 0, where the header goes next.
    redis.call('LTRIM', tl, drop, -1)
    sorted = max
  end
  redis.call('LSET', tl, 0, header(state, sorted, floor))
  return sorted, floor
end
