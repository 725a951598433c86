-- Wake-ups for idle workers blocked on K_WAKE: count them while a script runs, push them once
-- at the end. Bounded: a burst of enqueues with no worker listening trims the list back to
-- MAX_WAKE once it passes twice that (one LTRIM per MAX_WAKE pushes, not one per push).
local MAX_WAKE = 256
local wakes = 0

local function flush_wakes()
  if wakes > 0 then
    local n = math.min(wakes, MAX_WAKE)
    local tokens = {}
    for i = 1, n do tokens[i] = '1' end
    if redis.call('LPUSH', K_WAKE, unpack(tokens)) > 2 * MAX_WAKE then
      redis.call('LTRIM', K_WAKE, 0, MAX_WAKE - 1)
    end
    wakes = 0
  end
end
