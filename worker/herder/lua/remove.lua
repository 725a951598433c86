-- Remove a job record. Refused while active (cancel it instead). Children of a removed
-- pending job die with the reason "parent X was removed". ARGV: base, id
local id = ARGV[2]
local k = jkey(id)
local st = redis.call('HGET', k, 'state')
if not st then return 'notfound' end
if st == 'active' then return 'active' end
local now = now_ms()
remove_from_pending_sets(id)
redis.call('ZREM', K_DEAD, id)
if st == 'ready' or st == 'scheduled' or st == 'waiting' then
  resolve_children(id, false, 'was removed', now)
end
redis.call('DEL', k, base .. ':log:' .. id, base .. ':children:' .. id)
redis.call('HINCRBY', K_STATS, 'removed', 1)
return 'removed'
