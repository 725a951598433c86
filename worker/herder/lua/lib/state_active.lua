-- @include state
-- The one transition into `active` (claim.lua), apart so that scripts which never claim do not
-- need the lease set among their KEYS (a producer's ACL does not reach it).
-- Claimed by worker `wid` until now + lease; the attempt number is the lease token.
local function to_active(id, wid, now, lease)
  local k = job_key(id)
  local att = redis.call('HINCRBY', k, 'attempts', 1)
  redis.call('HSET', k, 'state', 'active', 'worker', wid, 'started_at', now, 'lease', att)
  redis.call('ZADD', K_ACTIVE, now + lease, id)
  return att
end
