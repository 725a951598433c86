-- @include state
-- The one transition into `active` (claim.lua), apart so that scripts which never claim do not
-- need the lease set among their KEYS (a producer's ACL does not reach it).
-- A batch claimed by worker `wid` until now + lease: `claims` is a list of {id, attempt, extra}
-- (the attempt number, already counted by the caller, is the lease token; `extra`: more fields
-- stored with the state, or nil). One HSET per job, one ZADD for the batch.
local function to_active(claims, wid, now, lease)
  local members = {}
  for _, c in ipairs(claims) do
    redis.call('HSET', job_key(c[1]), 'state', 'active', 'worker', wid, 'started_at', now, 'lease', c[2], 'attempts', c[2], unpack(c[3] or {}))
    members[#members + 1] = now + lease
    members[#members + 1] = c[1]
  end
  -- in chunks: Lua's unpack has a stack limit
  for j = 1, #members, 1000 do
    redis.call('ZADD', K_ACTIVE, unpack(members, j, math.min(j + 999, #members)))
  end
end
