-- One job's event feed, read at one instant (standalone, no lua/lib includes): used by
-- herder.jobevents for the dashboard's and the API's job event streams. A script rather than
-- MULTI so it runs the same on one Redis and on Redis Cluster (redis-py's cluster client has no
-- transactions); both keys carry the queue's hash tag, so they share a slot.
-- @readonly (run with EVALSHA_RO: read access to its keys is enough)
-- KEYS: 1 the job hash, 2 the job's event log (list)
-- ARGV: 1 'snapshot' then the hash fields to read, or 'log', start index, count
-- Reply: snapshot -> {field values, progress, length of errors, log head, log length};
--        log -> {log head, entries from start (at most count)}
local job, log = KEYS[1], KEYS[2]
if ARGV[1] == 'snapshot' then
  local fields = {}
  for i = 2, #ARGV do fields[#fields + 1] = ARGV[i] end
  return {
    redis.call('HMGET', job, unpack(fields)),
    redis.call('HGET', job, 'progress'),
    redis.call('HSTRLEN', job, 'errors'),
    redis.call('LINDEX', log, 0),
    redis.call('LLEN', log),
  }
end
local start = tonumber(ARGV[2])
return {redis.call('LINDEX', log, 0), redis.call('LRANGE', log, start, start + tonumber(ARGV[3]) - 1)}
