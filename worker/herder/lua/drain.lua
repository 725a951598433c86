-- Mark a worker draining (it stops claiming at once) or clear the mark, and poke it.
-- ARGV: base, worker_id, '1' drain / '0' undrain, '1' exit when drained / '0'
local wk = base .. ':worker:' .. ARGV[2]
if redis.call('EXISTS', wk) == 0 then return 0 end
-- 'drained' is the worker's own report; reset it so a stale value from an earlier drain
-- cannot make a busy worker look removable before its next heartbeat.
redis.call('HSET', wk, 'draining', ARGV[3], 'exit_when_drained', ARGV[4], 'drained', '0')
local ctl = base .. ':ctl:' .. ARGV[2]
redis.call('LPUSH', ctl, ARGV[3] == '1' and 'drain' or 'undrain')
redis.call('PEXPIRE', ctl, 60000)
return 1
