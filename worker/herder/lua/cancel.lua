-- cancel: a pending job at once; an active one cooperatively (flagged, and its worker poked;
-- the worker then finishes it as 'cancelled').
-- KEYS: ready readyc scheduled waiting dead stats wake
-- ARGV: 1 key base, 2 job id
-- Reply: {code, detail}: {'cancelled', ''} | {'cancelling', worker} | {'notfound', ''} |
--        {'final', state}. Decoded by herder.replies.cancel_state.
-- @include time
-- @include state
local id = ARGV[2]
local k = job_key(id)
local f = redis.call('HMGET', k, 'state', 'worker')
local st = f[1]
if not st then return {'notfound', ''} end
local now = now_ms()
if st == 'ready' or st == 'scheduled' or st == 'waiting' then
  remove_from_pending_sets(id)
  to_cancelled(id, now)
  resolve_children(id, false, 'was cancelled', now)
  flush_stats()
  flush_wakes()
  return {'cancelled', ''}
elseif st == 'active' then
  redis.call('HSET', k, 'cancel', '1')
  redis.call('LPUSH', ctl_key(f[2]), 'cancel')
  redis.call('PEXPIRE', ctl_key(f[2]), 60000)
  return {'cancelling', f[2]}
end
return {'final', st}
