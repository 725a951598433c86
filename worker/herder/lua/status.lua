-- One consistent snapshot of a queue. ARGV: base, lease_ms
local lease = tonumber(ARGV[2])
local now = now_ms()
local due = redis.call('ZCOUNT', K_SCHED, '-inf', now)
local ready = redis.call('ZCARD', K_READY) + redis.call('ZCARD', K_READYC) + due
local sched = redis.call('ZCARD', K_SCHED) - due
local workers = {}
for _, w in ipairs(redis.call('ZRANGEBYSCORE', K_WORKERS, now - lease, '+inf')) do
  local h = redis.call('HGETALL', base .. ':worker:' .. w)
  if #h > 0 then workers[#workers + 1] = h end
end
return {now, ready, sched, redis.call('SCARD', K_WAITING), redis.call('ZCARD', K_ACTIVE),
  redis.call('ZCARD', K_DEAD), redis.call('EXISTS', K_PAUSED), workers, redis.call('HGETALL', K_STATS)}
