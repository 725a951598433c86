-- Finish a batch of attempts held by one worker. Fenced: only the current lease holder
-- (same worker, same attempt token) may finish a job, so a worker that lost its lease
-- cannot overwrite the outcome of the worker that took the job over.
-- ARGV: base, worker_id, keep_ms, then groups of 6:
--   id, token, outcome (ok|retry|dead|handback|cancelled), data (result JSON or error JSON), delay_ms, reason
local FREE_HANDBACKS = 3
local wid = ARGV[2]
local keep = tonumber(ARGV[3])
local now = now_ms()
local out = {}
for i = 4, #ARGV, 6 do
  local id, tok, outcome, data, delay, reason = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], tonumber(ARGV[i + 4]), ARGV[i + 5]
  local k = jkey(id)
  local f = redis.call('HMGET', k, 'state', 'lease', 'worker', 'attempts', 'max_attempts')
  if f[1] ~= 'active' or f[2] ~= tok or f[3] ~= wid then
    redis.call('HINCRBY', K_STATS, 'stale_finish', 1)
    out[#out + 1] = 'stale'
  else
    redis.call('ZREM', K_ACTIVE, id)
    if outcome == 'ok' then
      redis.call('HSET', k, 'state', 'succeeded', 'result', data, 'finished_at', now, 'lease', '')
      redis.call('HINCRBY', K_STATS, 'succeeded', 1)
      resolve_children(id, true, '', now)
      if keep > 0 then
        redis.call('PEXPIRE', k, keep)
        redis.call('PEXPIRE', base .. ':log:' .. id, keep)
      end
      out[#out + 1] = 'succeeded'
    else
      append_error(k, data)
      redis.call('HSET', k, 'lease', '', 'worker', '')
      if outcome == 'retry' and tonumber(f[4]) >= tonumber(f[5]) then
        outcome = 'dead'
        reason = 'out of attempts (' .. f[4] .. '/' .. f[5] .. '): ' .. reason
      end
      if outcome == 'handback' then
        -- Interrupted by the platform (drain deadline, a second signal), not by the job: no
        -- attempt is spent, FREE_HANDBACKS times. A job handed back more often than that is the
        -- likeliest cause itself (its code or processes signal their worker): from then on each
        -- hand-back spends an attempt, so a poison job still reaches the dead-letter queue.
        local hb = redis.call('HINCRBY', k, 'handbacks', 1)
        if hb <= FREE_HANDBACKS then
          redis.call('HINCRBY', k, 'attempts', -1)
        elseif tonumber(f[4]) >= tonumber(f[5]) then
          outcome = 'dead'
          reason = 'handed back ' .. hb .. ' times, out of attempts (' .. f[4] .. '/' .. f[5] .. '): ' .. reason
        end
      end
      if outcome == 'handback' then
        redis.call('HINCRBY', K_STATS, 'handed_back', 1)
        make_ready(id, true)
        out[#out + 1] = 'ready'
      elseif outcome == 'retry' then
        redis.call('HINCRBY', K_STATS, 'retried', 1)
        if delay > 0 then
          redis.call('ZADD', K_SCHED, now + delay, id)
          redis.call('HSET', k, 'state', 'scheduled')
          wakes = wakes + 1
          out[#out + 1] = 'scheduled'
        else
          make_ready(id, true)
          out[#out + 1] = 'ready'
        end
      elseif outcome == 'cancelled' then
        to_cancelled(id, now)
        resolve_children(id, false, 'was cancelled', now)
        out[#out + 1] = 'cancelled'
      else
        to_dead(id, reason, now)
        resolve_children(id, false, 'failed', now)
        out[#out + 1] = 'dead'
      end
    end
  end
end
flush_wakes()
return out
