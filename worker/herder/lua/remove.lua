-- remove: delete a job record. Refused while active (cancel it instead). Children of a removed
-- pending job die with the reason "parent X was removed".
-- KEYS: ready readyc scheduled waiting dead stats wake
-- ARGV: 1 key base, 2 job id
-- Reply: {code, detail}: {'removed', previous state} | {'notfound', ''} | {'active', worker}.
--        Decoded by herder.replies.check_removed.
-- @include time
-- @include state
local id = ARGV[2]
local k = job_key(id)
local f = redis.call('HMGET', k, 'state', 'worker')
local st = f[1]
if not st then return {'notfound', ''} end
if st == 'active' then return {'active', f[2] or ''} end
local now = now_ms()
remove_from_pending_sets(id)
redis.call('ZREM', K_DEAD, id)
if st == 'ready' or st == 'scheduled' or st == 'waiting' then
  resolve_children(id, false, 'was removed', now)
end
redis.call('DEL', k, log_key(id), children_key(id))
redis.call('HINCRBY', K_STATS, 'removed', 1)
flush_stats()
flush_wakes()
return {'removed', st}
