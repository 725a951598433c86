-- Shared prelude, prepended to every Herder script.
-- ARGV[1] is always the queue's key base "prefix:{queue}"; every key below derives from it,
-- so all keys a script touches share the queue's hash tag (one Redis Cluster slot).
local base = ARGV[1]
local K_READY = base .. ':ready'        -- zset: ready jobs without capability requirements
local K_READYC = base .. ':readyc'      -- zset: ready jobs that require capabilities
local K_SCHED = base .. ':scheduled'    -- zset: score = due time (ms)
local K_WAITING = base .. ':waiting'    -- set: jobs waiting on parents
local K_ACTIVE = base .. ':active'      -- zset: score = lease expiry (ms)
local K_DEAD = base .. ':dead'          -- zset: score = time of death (ms)
local K_STATS = base .. ':stats'        -- hash: counters
local K_WAKE = base .. ':wake'          -- list: wake-up tokens for idle workers
local K_WORKERS = base .. ':workers'    -- zset: worker id -> last seen (ms)
local K_PAUSED = base .. ':paused'
local K_SEQ = base .. ':seq'
local PRI_SPAN = 1099511627776          -- 2^40: FIFO sequence space within one priority level
local MAX_WAKE = 256
local wakes = 0

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function jkey(id) return base .. ':job:' .. id end

-- Lower score = claimed first: higher priority, then enqueue order.
local function score_of(prio, seq) return (1000 - prio) * PRI_SPAN + seq end

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

local function make_ready(id, wake)
  local k = jkey(id)
  local f = redis.call('HMGET', k, 'priority', 'seq', 'caps')
  local s = score_of(tonumber(f[1]), tonumber(f[2]))
  if f[3] and f[3] ~= '' then
    redis.call('ZADD', K_READYC, s, id)
  else
    redis.call('ZADD', K_READY, s, id)
  end
  redis.call('HSET', k, 'state', 'ready')
  if wake then wakes = wakes + 1 end
end

-- Parents are resolved: the job is ready now, or scheduled if its run-at is in the future.
local function make_pending(id, now, wake)
  local k = jkey(id)
  local run_at = tonumber(redis.call('HGET', k, 'run_at') or '')
  if run_at and run_at > now then
    redis.call('ZADD', K_SCHED, run_at, id)
    redis.call('HSET', k, 'state', 'scheduled')
    if wake then wakes = wakes + 1 end  -- idle workers re-arm their timers
  else
    make_ready(id, wake)
  end
end

-- Errors are a JSON array kept as a string; appending is a string splice (no decode/encode).
local function append_error(k, err_json)
  local cur = redis.call('HGET', k, 'errors')
  if not cur or cur == '' or cur == '[]' then
    redis.call('HSET', k, 'errors', '[' .. err_json .. ']')
  else
    redis.call('HSET', k, 'errors', string.sub(cur, 1, -2) .. ',' .. err_json .. ']')
  end
end

local function remove_from_pending_sets(id)
  redis.call('ZREM', K_READY, id)
  redis.call('ZREM', K_READYC, id)
  redis.call('ZREM', K_SCHED, id)
  redis.call('SREM', K_WAITING, id)
end

local function to_dead(id, reason, now)
  local k = jkey(id)
  redis.call('HSET', k, 'state', 'dead', 'dead_reason', reason, 'finished_at', now, 'worker', '')
  redis.call('ZADD', K_DEAD, now, id)
  redis.call('HINCRBY', K_STATS, 'dead', 1)
end

local function to_cancelled(id, now)
  redis.call('HSET', jkey(id), 'state', 'cancelled', 'finished_at', now, 'worker', '')
  redis.call('HINCRBY', K_STATS, 'cancelled', 1)
end

-- A parent reached a final state. ok=true: it succeeded. Otherwise `why` says what happened
-- ("failed", "was cancelled", "was removed"); children die with it unless run_regardless.
local function resolve_children(id, ok, why, now)
  local stack = {{id, ok, why}}
  while #stack > 0 do
    local item = table.remove(stack)
    local pid, pok, pwhy = item[1], item[2], item[3]
    local ck = base .. ':children:' .. pid
    local kids = redis.call('SMEMBERS', ck)
    redis.call('DEL', ck)
    for _, cid in ipairs(kids) do
      local k = jkey(cid)
      if redis.call('HGET', k, 'state') == 'waiting' then
        if pok or redis.call('HGET', k, 'run_regardless') == '1' then
          if redis.call('HINCRBY', k, 'pending', -1) <= 0 then
            redis.call('SREM', K_WAITING, cid)
            make_pending(cid, now, true)
          end
        else
          redis.call('SREM', K_WAITING, cid)
          to_dead(cid, 'parent ' .. pid .. ' ' .. pwhy, now)
          table.insert(stack, {cid, false, 'failed'})
        end
      end
    end
  end
end

local function err_json(attempt, kind, etype, message, worker, started, ended)
  return cjson.encode({attempt = attempt, kind = kind, type = etype, message = message,
    traceback = '', worker = worker, started_at = started, ended_at = ended})
end
