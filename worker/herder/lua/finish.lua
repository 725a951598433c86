-- finish: store a batch of attempts held by one worker. Fenced: only the current lease holder
-- (same worker, same attempt token) may finish a job, so a worker that lost its lease cannot
-- overwrite the outcome of the worker that took the job over.
-- KEYS: ready readyc scheduled waiting active dead stats wake
-- ARGV: 1 key base, 2 worker id, 3 keep_result ms, 4 ids kept per state in the recent index
--       (herder.recent.RECENT_KEPT), then groups of 6: id, token, outcome
--       (ok|retry|dead|handback|cancelled), data (result JSON or error JSON), delay ms, reason
-- Reply: one state per group: succeeded|scheduled|ready|dead|cancelled, or stale (not the
--        lease holder: nothing written).
-- @include time
-- @include errors
-- @include state
local wid = ARGV[2]
local keep = tonumber(ARGV[3])
local recent_cap = tonumber(ARGV[4])
local now = now_ms()
local out, done, succeeded, cancelled = {}, {}, {}, {}

-- The browse index of finished jobs (herder.recent; neither state has a set of its own),
-- advisory and bounded: trimmed back to its cap once 1/32 over, so a trim is rare.
local function note_recent(state, ids)
  if #ids == 0 then return end
  local key = recent_key(state)
  for j = 1, #ids, 500 do
    local args = {}
    for i = j, math.min(j + 499, #ids) do
      args[#args + 1] = now
      args[#args + 1] = ids[i]
    end
    redis.call('ZADD', key, unpack(args))
  end
  if redis.call('ZCARD', key) > recent_cap + math.floor(recent_cap / 32) then
    redis.call('ZREMRANGEBYRANK', key, 0, -recent_cap - 1)
  end
end

for i = 5, #ARGV, 6 do
  local id, tok, outcome, data, delay, reason = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], tonumber(ARGV[i + 4]), ARGV[i + 5]
  local k = job_key(id)
  local f = redis.call('HMGET', k, 'state', 'lease', 'worker', 'attempts', 'max_attempts')
  if f[1] ~= 'active' or f[2] ~= tok or f[3] ~= wid then
    count_stat('stale_finish')
    out[#out + 1] = 'stale'
  else
    done[#done + 1] = id
    if outcome == 'ok' then
      to_succeeded(id, data, now)
      succeeded[#succeeded + 1] = id
      out[#out + 1] = 'succeeded'
    else
      -- stored with the new state, in the transition's HSET
      local extra = {'errors', errors_with(k, data), 'lease', '', 'worker', ''}
      -- nil when corrupt: the transition helpers dead-letter such a job (dead_if_corrupt)
      local att, max_att = int_field(f[4]), int_field(f[5])
      if outcome == 'handback' then
        out[#out + 1] = after_handback(id, att, max_att, reason, now, extra)
      elseif outcome == 'retry' then
        out[#out + 1] = after_failed_attempt(id, att, max_att, delay, reason, now, extra)
      elseif outcome == 'cancelled' then
        to_cancelled(id, now, extra)
        resolve_children(id, false, 'was cancelled', now)
        cancelled[#cancelled + 1] = id
        out[#out + 1] = 'cancelled'
      else
        out[#out + 1] = to_dead_failed(id, reason, now, extra)
      end
    end
  end
end
resolve_children_of(succeeded, true, '', now)
if keep > 0 then
  for _, id in ipairs(succeeded) do redis.call('PEXPIRE', job_key(id), keep) end
  -- a job has an event log only if its task logged: one EXISTS over the batch's logs first
  if count_existing(succeeded, log_key) > 0 then
    for _, id in ipairs(succeeded) do redis.call('PEXPIRE', log_key(id), keep) end
  end
end
-- off the lease set: one ZREM for the batch (in chunks: Lua's unpack has a stack limit)
for j = 1, #done, 1000 do
  redis.call('ZREM', K_ACTIVE, unpack(done, j, math.min(j + 999, #done)))
end
note_recent('succeeded', succeeded)
note_recent('cancelled', cancelled)
flush_stats()
flush_wakes()
return out
