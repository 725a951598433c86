-- Wake-ups for idle workers blocked on K_WAKE: count them while a script runs, push them once
-- at the end (bounded, so a burst of enqueues cannot grow the list without limit).
local MAX_WAKE = 256
local wakes = 0

local function flush_wakes()
  if wakes > 0 then
    local n = math.min(wakes, MAX_WAKE)
    local tokens = {}
    for i = 1, n do tokens[i] = '1' end
    redis.call('LPUSH', K_WAKE, unpack(tokens))
    redis.call('LTRIM', K_WAKE, 0, MAX_WAKE - 1)
    wakes = 0
  end
end
