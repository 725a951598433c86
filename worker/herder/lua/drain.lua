-- drain: mark a worker draining (it stops claiming at once) or clear the mark, and poke it.
-- KEYS: worker(2) ctl(2)
-- ARGV: 1 key base, 2 worker id, 3 '1' drain | '0' undrain, 4 '1' exit when drained | '0'
-- Reply: 1, or 0 when no such live worker.
local wk = K_WORKER
if redis.call('EXISTS', wk) == 0 then return 0 end
-- 'drained' is the worker's own report; reset it so a stale value from an earlier drain
-- cannot make a busy worker look removable before its next heartbeat.
redis.call('HSET', wk, 'draining', ARGV[3], 'exit_when_drained', ARGV[4], 'drained', '0')
local ctl = K_CTL
redis.call('LPUSH', ctl, ARGV[3] == '1' and 'drain' or 'undrain')
redis.call('PEXPIRE', ctl, 60000)
return 1
