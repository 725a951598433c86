-- status: one consistent snapshot of a queue.
-- KEYS: ready readyc scheduled waiting active dead stats workers paused
-- ARGV: 1 key base, 2 lease ms (workers not seen for a lease are left out)
-- Reply: {now_ms, ready, scheduled, waiting, active, dead, paused 0|1, workers (flat hashes),
--         stats (flat hash)}. Decoded by herder.replies.queue_status.
-- @readonly (run with EVALSHA_RO: read access to its keys is enough)
-- @include time
local lease = tonumber(ARGV[2])
local now = now_ms()
local due = redis.call('ZCOUNT', K_SCHEDULED, '-inf', now)
local ready = redis.call('ZCARD', K_READY) + redis.call('ZCARD', K_READYC) + due
local sched = redis.call('ZCARD', K_SCHEDULED) - due
local workers = {}
for _, w in ipairs(redis.call('ZRANGEBYSCORE', K_WORKERS, now - lease, '+inf')) do
  local h = redis.call('HGETALL', worker_key(w))
  if #h > 0 then workers[#workers + 1] = h end
end
return {now, ready, sched, redis.call('SCARD', K_WAITING), redis.call('ZCARD', K_ACTIVE),
  redis.call('ZCARD', K_DEAD), redis.call('EXISTS', K_PAUSED), workers, redis.call('HGETALL', K_STATS)}
