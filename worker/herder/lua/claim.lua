-- claim: one round trip for an idle or finishing worker: heartbeat (optional), reap expired
-- leases (optional), promote due scheduled jobs, and claim up to N of the best ready jobs.
-- KEYS: ready readyc scheduled waiting active dead stats wake workers paused
-- ARGV: 1 key base, 2 worker id, 3 n (jobs wanted), 4 lease ms, 5 worker capabilities (JSON
--       array), 6 heartbeat JSON {fields, jobs: [[id, token]...]} ('' = no heartbeat),
--       7 reap expired leases '1' | '0', 8 the worker's max_attempts per task (JSON object
--       {task: n, ...}; stamped on a claimed job that carries none, e.g. from a producer
--       without the task set; a task missing there gets 3, the Task default)
-- Reply: {jobs, now_ms, next_due_ms|'', next_expiry_ms|'', paused 0|1, draining 0|1|2,
--         lost ids, cancel ids, expired count}; each job is
--         {id, task, payload, attempt (= lease token), timeout|'', max_attempts, backoff JSON}.
--         Decoded by herder.replies.ClaimReply.
-- @include time
-- @include errors
-- @include state_active
local wid = ARGV[2]
local n = tonumber(ARGV[3])
local lease = tonumber(ARGV[4])
local now = now_ms()
local wk = worker_key(wid)
local lost, cancels = {}, {}

-- Heartbeat: refresh the registry entry and extend the leases this worker still holds.
if ARGV[6] ~= '' then
  local hb = cjson.decode(ARGV[6])
  local fields = {}
  for key, value in pairs(hb.fields) do
    fields[#fields + 1] = key
    fields[#fields + 1] = tostring(value)
  end
  redis.call('HSET', wk, 'last_seen', now, unpack(fields))
  redis.call('PEXPIRE', wk, lease * 3)
  redis.call('ZADD', K_WORKERS, now, wid)
  for _, pair in ipairs(hb.jobs) do
    local jid, tok = pair[1], tostring(pair[2])
    local f = redis.call('HMGET', job_key(jid), 'state', 'worker', 'lease', 'cancel')
    if f[1] == 'active' and f[2] == wid and f[3] == tok then
      redis.call('ZADD', K_ACTIVE, 'XX', now + lease, jid)
      if f[4] == '1' then cancels[#cancels + 1] = jid end
    else
      lost[#lost + 1] = jid  -- taken over or finished elsewhere: the worker must drop it
    end
  end
end
-- 0: not draining; 1: draining; 2: draining, then exit when idle
local dflags = redis.call('HMGET', wk, 'draining', 'exit_when_drained')
local draining = dflags[1] == '1' and (dflags[2] == '1' and 2 or 1) or 0

-- Reap: a lease that ran out means its worker died (or was partitioned for a whole lease).
-- The attempt counts as failed: retried with the job's backoff, or dead when it was the last.
local expired_n = 0
if ARGV[7] == '1' then
  local expired = redis.call('ZRANGEBYSCORE', K_ACTIVE, '-inf', now, 'LIMIT', 0, 100)
  for _, jid in ipairs(expired) do
    redis.call('ZREM', K_ACTIVE, jid)
    local k = job_key(jid)
    local f = redis.call('HMGET', k, 'state', 'worker', 'attempts', 'max_attempts', 'cancel', 'started_at', 'backoff')
    if f[1] == 'active' then
      expired_n = expired_n + 1
      count_stat('lease_expired')
      local att, max_att = int_field(f[3]), int_field(f[4])
      local why = 'lease expired: worker ' .. (f[2] or '?') .. ' stopped heartbeating'
      local extra = {'errors', errors_with(k, err_json(att, 'lease_expired', 'LeaseExpired', why, f[2],
        (tonumber(f[6]) or now) / 1000, now / 1000)), 'worker', '', 'lease', ''}
      if dead_if_corrupt(jid, att, max_att, why, now, extra) then
        -- dead-lettered: corrupt counters (even when a cancel was asked for)
      elseif f[5] == '1' then
        to_cancelled(jid, now, extra)
        resolve_children(jid, false, 'was cancelled', now)
      else
        -- the draw for the jitter: from the clock, as scripts have no free randomness
        local u = ((now + expired_n * 7919) % 2001) / 1000 - 1
        after_failed_attempt(jid, att, max_att, backoff_ms(f[7], att, u), why, now, extra)
      end
    end
  end
  local gone = redis.call('ZRANGEBYSCORE', K_WORKERS, '-inf', now - lease, 'LIMIT', 0, 100)
  for _, w in ipairs(gone) do
    redis.call('ZREM', K_WORKERS, w)
    redis.call('DEL', worker_key(w), ctl_key(w))
  end
end

-- Promote scheduled jobs whose time has come (looked for only when the first one is due).
local nd = redis.call('ZRANGE', K_SCHEDULED, 0, 0, 'WITHSCORES')
if nd[2] and tonumber(nd[2]) <= now then
  local due = redis.call('ZRANGEBYSCORE', K_SCHEDULED, '-inf', now, 'LIMIT', 0, 1000)
  redis.call('ZREM', K_SCHEDULED, unpack(due))
  for _, jid in ipairs(due) do to_ready(jid, false) end
  if #due > n then wakes = wakes + #due - n end
  nd = redis.call('ZRANGE', K_SCHEDULED, 0, 0, 'WITHSCORES')
end

-- Claim.
local jobs = {}
local ready_empty = nil  -- known after a batch claim; else counted below
local paused = redis.call('EXISTS', K_PAUSED)
if paused == 0 and draining == 0 and n > 0 then
  local caps = {}
  for _, c in ipairs(cjson.decode(ARGV[5])) do caps[c] = true end
  local limits = {}
  if ARGV[8] and ARGV[8] ~= '' then limits = cjson.decode(ARGV[8]) end
  local picked = {}
  if redis.call('ZCARD', K_READYC) == 0 then
    -- the common case: the best n of one set, taken in one ZRANGE and one ZREM (one extra
    -- entry read tells whether any are left)
    local r = redis.call('ZRANGE', K_READY, 0, n)
    ready_empty = #r <= n
    for j = 1, math.min(n, #r) do picked[j] = r[j] end
    for j = 1, #picked, 1000 do
      redis.call('ZREM', K_READY, unpack(picked, j, math.min(j + 999, #picked)))
    end
  else
    for _ = 1, n do
      local best, best_score, src = nil, nil, nil
      local r = redis.call('ZRANGE', K_READY, 0, 0, 'WITHSCORES')
      if #r > 0 then best, best_score, src = r[1], tonumber(r[2]), K_READY end
      local rc = redis.call('ZRANGE', K_READYC, 0, 99, 'WITHSCORES')
      for j = 1, #rc, 2 do
        local sc = tonumber(rc[j + 1])
        if best_score and sc >= best_score then break end
        local ok = true
        for _, need in ipairs(cjson.decode(redis.call('HGET', job_key(rc[j]), 'caps'))) do
          if not caps[need] then ok = false break end
        end
        if ok then best, best_score, src = rc[j], sc, K_READYC break end
      end
      if not best then break end
      redis.call('ZREM', src, best)
      picked[#picked + 1] = best
    end
  end
  local claims = {}
  for _, id in ipairs(picked) do
    local f = redis.call('HMGET', job_key(id), 'task', 'payload', 'timeout', 'max_attempts', 'backoff', 'attempts')
    local att = 1
    if f[6] and f[6] ~= '' then
      att = int_field(f[6])
      att = att and att + 1
    end
    if not att then
      -- Corrupt: dead-lettered, never claimed, and never a script error that would fail every
      -- claim reaching this job (after the batch had left the ready set).
      to_dead_failed(id, 'corrupt job: attempts is not an integer', now)
    else
      local extra = nil
      if not f[4] or f[4] == '' then
        -- stamped, not just replied: finish and the lease reaper read it from the job
        f[4] = tostring(tonumber(limits[f[1]]) or 3)
        extra = {'max_attempts', f[4]}
      end
      claims[#claims + 1] = {id, att, extra}
      jobs[#jobs + 1] = {id, f[1], f[2], att, f[3], f[4], f[5]}
    end
  end
  to_active(claims, wid, now, lease)
end
if ready_empty == nil and paused == 0 then
  ready_empty = redis.call('ZCARD', K_READY) == 0 and redis.call('ZCARD', K_READYC) == 0
end
if paused == 1 or ready_empty then
  redis.call('DEL', K_WAKE)  -- nothing to wake anyone for (resume pushes fresh tokens)
  wakes = 0
end
flush_stats()
flush_wakes()

local na = redis.call('ZRANGE', K_ACTIVE, 0, 0, 'WITHSCORES')
return {jobs, now, nd[2] or '', na[2] or '', paused, draining, lost, cancels, expired_n}
