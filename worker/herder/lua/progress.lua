-- progress: record a running job's progress; fenced by the lease like finish.
-- KEYS: job(2)
-- ARGV: 1 key base, 2 job id, 3 lease token, 4 worker id, 5 progress JSON
-- Reply: 1 stored, 0 not the lease holder (nothing written).
local k = K_JOB
local f = redis.call('HMGET', k, 'state', 'lease', 'worker')
if f[1] ~= 'active' or f[2] ~= ARGV[3] or f[3] ~= ARGV[4] then return 0 end
redis.call('HSET', k, 'progress', ARGV[5])
return 1
