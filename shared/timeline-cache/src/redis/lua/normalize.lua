-- Normalises a timeline if it exists.
local state, sorted, floor = load()
if not state then return 0 end
normalize(state, sorted, floor)
return 1
