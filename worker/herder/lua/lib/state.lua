-- @include wake
-- @include rules
-- The job state machine: every write of a job's `state` field happens here, one helper per
-- target state (docs/queue.md has the table; tests/test_lua_interface.py checks it against
-- this file). Each helper also moves the job between the queue's state sets.

-- Counter increments are collected while a script runs and stored once at its end
-- (flush_stats, which every script that includes this file calls): one HINCRBY per counter
-- and call, not one per job.
local stat_adds = {}

local function count_stat(name)
  stat_adds[name] = (stat_adds[name] or 0) + 1
end

local function flush_stats()
  for name, n in pairs(stat_adds) do redis.call('HINCRBY', K_STATS, name, n) end
  stat_adds = {}
end

local PRI_SPAN = 1099511627776          -- 2^40: FIFO sequence space within one priority level

-- Lower score = claimed first: higher priority, then enqueue order.
local function score_of(prio, seq) return (1000 - prio) * PRI_SPAN + seq end

-- `known` (optional): the job's {priority, seq, caps} when the caller has them (no re-read);
-- `extra` (optional): more field/value pairs stored in the same HSET as the state (enqueue
-- writes a new job's whole hash that way: one command). Neither may name a field the helper
-- writes itself.
local function to_ready(id, wake, known, extra)
  local k = job_key(id)
  local f = known or redis.call('HMGET', k, 'priority', 'seq', 'caps')
  local s = score_of(tonumber(f[1]), tonumber(f[2]))
  if f[3] and f[3] ~= '' then
    redis.call('ZADD', K_READYC, s, id)
  else
    redis.call('ZADD', K_READY, s, id)
  end
  redis.call('HSET', k, 'state', 'ready', unpack(extra or {}))
  if wake then wakes = wakes + 1 end
  return 'ready'
end

local function to_scheduled(id, due, wake, extra)
  redis.call('ZADD', K_SCHEDULED, due, id)
  redis.call('HSET', job_key(id), 'state', 'scheduled', unpack(extra or {}))
  if wake then wakes = wakes + 1 end  -- idle workers re-arm their timers
  return 'scheduled'
end

local function to_waiting(id, pending, extra)
  redis.call('HSET', job_key(id), 'state', 'waiting', 'pending', pending, unpack(extra or {}))
  redis.call('SADD', K_WAITING, id)
  return 'waiting'
end

-- Parents are resolved: the job is ready now, or scheduled if its run-at is in the future.
-- `run_at` (optional, '' = none) when the caller has it; `known`, `extra` as for to_ready.
local function to_pending(id, now, wake, run_at, known, extra)
  if run_at == nil then run_at = redis.call('HGET', job_key(id), 'run_at') end
  run_at = tonumber(run_at or '')
  if run_at and run_at > now then
    return to_scheduled(id, run_at, wake, extra)
  end
  return to_ready(id, wake, known, extra)
end

local function to_succeeded(id, result, now)
  redis.call('HSET', job_key(id), 'state', 'succeeded', 'result', result, 'finished_at', now, 'lease', '')
  count_stat('succeeded')
end

local function to_dead(id, reason, now, extra)
  redis.call('HSET', job_key(id), 'state', 'dead', 'dead_reason', reason, 'finished_at', now, 'worker', '',
    unpack(extra or {}))
  redis.call('ZADD', K_DEAD, now, id)
  count_stat('dead')
end

local function to_cancelled(id, now, extra)
  redis.call('HSET', job_key(id), 'state', 'cancelled', 'finished_at', now, 'worker', '', unpack(extra or {}))
  count_stat('cancelled')
end

local function remove_from_pending_sets(id)
  redis.call('ZREM', K_READY, id)
  redis.call('ZREM', K_READYC, id)
  redis.call('ZREM', K_SCHEDULED, id)
  redis.call('SREM', K_WAITING, id)
end

-- A parent reached a final state. ok=true: it succeeded. Otherwise `why` says what happened
-- ("failed", "was cancelled", "was removed"); children die with it unless run_regardless.
local function resolve_children(id, ok, why, now)
  local stack = {{id, ok, why}}
  while #stack > 0 do
    local item = table.remove(stack)
    local pid, pok, pwhy = item[1], item[2], item[3]
    local ck = children_key(pid)
    local kids = redis.call('SMEMBERS', ck)
    if #kids > 0 then redis.call('DEL', ck) end
    for _, cid in ipairs(kids) do
      local k = job_key(cid)
      if redis.call('HGET', k, 'state') == 'waiting' then
        if pok or redis.call('HGET', k, 'run_regardless') == '1' then
          if redis.call('HINCRBY', k, 'pending', -1) <= 0 then
            redis.call('SREM', K_WAITING, cid)
            to_pending(cid, now, true)
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

-- How many of the keys key_of(id) exist: one EXISTS per 1000 ids (Lua's unpack has a stack
-- limit), where a read of each key would cost one command per id.
local function count_existing(ids, key_of)
  local n = 0
  for j = 1, #ids, 1000 do
    local keys = {}
    for i = j, math.min(j + 999, #ids) do keys[#keys + 1] = key_of(ids[i]) end
    n = n + redis.call('EXISTS', unpack(keys))
  end
  return n
end

-- resolve_children for a batch of jobs that ended alike (finish: the batch's successes): one
-- EXISTS over their children sets first, as most jobs have none.
local function resolve_children_of(ids, ok, why, now)
  if #ids == 0 or count_existing(ids, children_key) == 0 then return end
  for _, id in ipairs(ids) do resolve_children(id, ok, why, now) end
end

-- An attempt failed in a way that may be retried (an error, a timeout, an expired lease): dead
-- when attempts are exhausted, else retried after `delay_ms` (0: ready at once). The job is
-- already off the lease set (or leaves it with this script). `extra`: fields stored with the new
-- state (the failure history, the cleared lease). Returns the new state.
-- A job that failed for good: dead, and its waiting children resolved as failed.
local function to_dead_failed(id, reason, now, extra)
  to_dead(id, reason, now, extra)
  resolve_children(id, false, 'failed', now)
  return 'dead'
end

-- Counters that are not integers (int_field gave nil: the hash is producer-writable): no rule can
-- decide, so the dead-letter queue does; never a script error, which would leave the writes made
-- so far (the rest of a batch) half done.
local function dead_if_corrupt(id, attempts, max_attempts, reason, now, extra)
  if attempts and max_attempts then return nil end
  return to_dead_failed(id, 'corrupt job: attempts or max_attempts is not an integer; ' .. reason, now, extra)
end

local function after_failed_attempt(id, attempts, max_attempts, delay_ms, reason, now, extra)
  local corrupt = dead_if_corrupt(id, attempts, max_attempts, reason, now, extra)
  if corrupt then return corrupt end
  if attempts_exhausted(attempts, max_attempts) then
    return to_dead_failed(id, 'out of attempts (' .. attempts .. '/' .. max_attempts .. '): ' .. reason, now, extra)
  end
  count_stat('retried')
  if delay_ms > 0 then
    to_scheduled(id, now + delay_ms, true, extra)
    return 'scheduled'
  end
  to_ready(id, true, nil, extra)
  return 'ready'
end

-- The worker stopped mid-task (hand-back): ready again at once; free of charge while
-- handback_is_free, else it spends the attempt (dead when that was the last one). `extra` as for
-- after_failed_attempt.
local function after_handback(id, attempts, max_attempts, reason, now, extra)
  local corrupt = dead_if_corrupt(id, attempts, max_attempts, reason, now, extra)
  if corrupt then return corrupt end
  local hb = redis.call('HINCRBY', job_key(id), 'handbacks', 1)
  if handback_is_free(hb) then
    redis.call('HINCRBY', job_key(id), 'attempts', -1)
  elseif attempts_exhausted(attempts, max_attempts) then
    return to_dead_failed(id, 'handed back ' .. hb .. ' times, out of attempts (' .. attempts .. '/' .. max_attempts .. '): ' .. reason, now, extra)
  end
  count_stat('handed_back')
  to_ready(id, true, nil, extra)
  return 'ready'
end
