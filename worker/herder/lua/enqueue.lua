-- enqueue: a batch of jobs, atomically. An existing id is returned as is (idempotency key); an
-- unknown parent fails the whole batch before anything is written.
-- KEYS: ready readyc scheduled waiting dead stats wake seq
-- ARGV: 1 key base, 2 JSON array of job specs (herder.wire.encode_job)
-- Reply: one {id, state, created 0|1} per spec; error `INVALID <reason>` for bad input,
-- `CONFLICT <reason>` for an existing id with another task or payload.
-- @include time
-- @include state
local specs = cjson.decode(ARGV[2])
local now = now_ms()
local seen = {}
for _, s in ipairs(specs) do
  local have = redis.call('HMGET', job_key(s.id), 'task', 'payload')
  if have[1] then
    -- An idempotency key names one job: the same id with another task or payload is a
    -- conflict, refused before anything of the batch is written (never silently the old job).
    if have[1] ~= s.task or have[2] ~= s.payload then
      return redis.error_reply('CONFLICT job id ' .. s.id .. ' exists with another task or payload')
    end
  else
    for _, p in ipairs(s.parents) do
      if not seen[p] and redis.call('EXISTS', job_key(p)) == 0 then
        return redis.error_reply('INVALID unknown parent job id ' .. p .. ' (of job ' .. s.id .. ')')
      end
    end
  end
  seen[s.id] = true
end
local out = {}
for _, s in ipairs(specs) do
  local k = job_key(s.id)
  local existing = redis.call('HGET', k, 'state')
  if existing then
    out[#out + 1] = {s.id, existing, 0}
  else
    local seq = redis.call('INCR', K_SEQ)
    local run_at = ''
    if s.at_ms ~= '' then
      run_at = s.at_ms
    elseif tonumber(s.delay_ms) > 0 then
      run_at = now + tonumber(s.delay_ms)
    end
    redis.call('HSET', k, 'id', s.id, 'queue', s.queue, 'task', s.task, 'payload', s.payload,
      'priority', s.priority, 'attempts', 0, 'max_attempts', s.max_attempts,
      'backoff', s.backoff, 'timeout', s.timeout, 'parents', s.parents_json,
      'run_regardless', s.run_regardless, 'caps', s.caps, 'labels', s.labels,
      'enqueued_at', now, 'run_at', run_at, 'seq', seq, 'errors', '[]', 'pending', 0)
    local pending, dead_parent = 0, nil
    for _, p in ipairs(s.parents) do
      local pst = redis.call('HGET', job_key(p), 'state')
      if pst == 'dead' or pst == 'cancelled' then
        if s.run_regardless ~= '1' and not dead_parent then
          dead_parent = 'parent ' .. p .. (pst == 'dead' and ' failed' or ' was cancelled')
        end
      elseif pst ~= 'succeeded' then
        pending = pending + 1
        redis.call('SADD', children_key(p), s.id)
      end
    end
    if dead_parent then
      to_dead(s.id, dead_parent, now)
    elseif pending > 0 then
      to_waiting(s.id, pending)
    else
      to_pending(s.id, now, true)
    end
    redis.call('HINCRBY', K_STATS, 'enqueued', 1)
    out[#out + 1] = {s.id, redis.call('HGET', k, 'state'), 1}
  end
end
flush_wakes()
return out
