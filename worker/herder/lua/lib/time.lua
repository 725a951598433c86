-- now_ms(): the Redis server's clock in ms, the one clock every worker and client shares.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
