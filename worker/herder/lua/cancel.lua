-- Cancel a job. Pending: cancelled at once. Active: flagged, and its worker is poked to stop
-- it cooperatively; the worker then finishes it as 'cancelled'. ARGV: base, id
local id = ARGV[2]
local k = jkey(id)
local f = redis.call('HMGET', k, 'state', 'worker')
local st = f[1]
if not st then return 'notfound' end
local now = now_ms()
if st == 'ready' or st == 'scheduled' or st == 'waiting' then
  remove_from_pending_sets(id)
  to_cancelled(id, now)
  resolve_children(id, false, 'was cancelled', now)
  return 'cancelled'
elseif st == 'active' then
  redis.call('HSET', k, 'cancel', '1')
  redis.call('LPUSH', base .. ':ctl:' .. f[2], 'cancel')
  redis.call('PEXPIRE', base .. ':ctl:' .. f[2], 60000)
  return 'cancelling'
end
return 'final:' .. st
