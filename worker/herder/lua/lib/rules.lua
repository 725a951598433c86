-- The queue's policy decisions, one rule each, as pure functions (no Redis calls): the state
-- helpers in state.lua act on what these decide.

-- A counter of a job hash (attempts, max_attempts) as an integer, or nil when it is not one:
-- the hash is producer-writable and anything in Redis may be corrupt. At most 15 digits, so the
-- value is exact in Lua's doubles and arithmetic on it cannot raise (which, mid-script, would
-- leave the writes made so far in place: a claimed batch half taken out of the ready set).
local function int_field(v)
  if type(v) ~= 'string' or #v > 15 or not string.match(v, '^%-?%d+$') then
    return nil
  end
  return tonumber(v)
end

-- Attempts exhausted: the attempt that just ended was the last one the job may have.
local function attempts_exhausted(attempts, max_attempts)
  return tonumber(attempts) >= tonumber(max_attempts)
end

-- Backoff before the next attempt, from the job's policy (JSON of herder.backoff.Backoff), the
-- attempt that just failed (1-based) and a draw u in [-1, 1]. Same formula as backoff.py, for
-- the retries Lua decides on its own (a lease that expired).
local function backoff_ms(policy_json, attempt, u)
  local ok, p = pcall(cjson.decode, policy_json or '')
  if not ok or type(p) ~= 'table' then p = {} end
  local base_s = tonumber(p.base_seconds) or 1.0
  local factor = tonumber(p.factor) or 2.0
  local cap = tonumber(p.max_seconds) or 300.0
  local jitter = tonumber(p.jitter) or 0.2
  u = math.max(-1, math.min(1, u))
  local raw = math.min(cap, base_s * factor ^ (math.max(1, attempt) - 1))
  return math.floor(math.max(0, math.min(cap, raw * (1 + jitter * u))) * 1000)
end

-- A hand-back (the platform stopped the worker mid-task: drain deadline, second signal) does
-- not spend an attempt, FREE_HANDBACKS times. A job handed back more often than that is the
-- likeliest cause itself (its code or processes signal their worker): from then on each
-- hand-back spends an attempt, so a poison job still reaches the dead-letter queue.
local FREE_HANDBACKS = 3

local function handback_is_free(handbacks)
  return handbacks <= FREE_HANDBACKS
end
