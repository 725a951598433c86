-- Record a running job's progress; fenced like finish.lua. ARGV: base, id, token, worker, json
local k = jkey(ARGV[2])
local f = redis.call('HMGET', k, 'state', 'lease', 'worker')
if f[1] ~= 'active' or f[2] ~= ARGV[3] or f[3] ~= ARGV[4] then return 0 end
redis.call('HSET', k, 'progress', ARGV[5])
return 1
