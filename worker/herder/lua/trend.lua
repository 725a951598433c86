-- Record one per-minute trend sample of a queue, at most once per minute (the first caller wins;
-- every worker calls it each heartbeat, so a queue with any live worker gets a sample a minute).
-- Standalone (no lua/lib includes): every fixed key arrives in KEYS.
-- KEYS: 1 trend hash, 2 stats hash, 3 ready, 4 readyc, 5 scheduled, 6 waiting, 7 active, 8 dead,
--       9 workers zset
-- ARGV: 1 key base (worker and job hashes: same hash tag), 2 lease_ms, 3 retention (minutes),
--       4 how many next-to-run jobs to sample for wait ages
-- Reply: 1 when a sample was written, 0 when this minute already has one.
-- The sample is a CSV of integers (compact: a queue keeps at most `retention` of them):
--   enqueued,succeeded,retried,dead,cancelled (cumulative counters), ready,scheduled,waiting,
--   active,deadq (sizes), workers,capacity,in_flight, wait_p50_ms,wait_p95_ms,wait_max_ms
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local minute = math.floor(now / 60000)
if redis.call('HEXISTS', KEYS[1], minute) == 1 then return 0 end
local base, lease, keep, sample = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local st = redis.call('HMGET', KEYS[2], 'enqueued', 'succeeded', 'retried', 'dead', 'cancelled')
local due = redis.call('ZCOUNT', KEYS[5], '-inf', now)
local row = {}
for i = 1, 5 do row[i] = tonumber(st[i] or '0') or 0 end
row[6] = redis.call('ZCARD', KEYS[3]) + redis.call('ZCARD', KEYS[4]) + due
row[7] = redis.call('ZCARD', KEYS[5]) - due
row[8] = redis.call('SCARD', KEYS[6])
row[9] = redis.call('ZCARD', KEYS[7])
row[10] = redis.call('ZCARD', KEYS[8])
local nw, cap, busy = 0, 0, 0
for _, w in ipairs(redis.call('ZRANGEBYSCORE', KEYS[9], now - lease, '+inf', 'LIMIT', 0, 1000)) do
  local h = redis.call('HMGET', base .. ':worker:' .. w, 'capacity', 'in_flight', 'draining')
  nw = nw + 1
  if h[3] ~= '1' then cap = cap + (tonumber(h[1] or '0') or 0) end
  busy = busy + (tonumber(h[2] or '0') or 0)
end
row[11], row[12], row[13] = nw, cap, busy
-- How long the next jobs to run have been waiting: since enqueue or their run-at, whichever is later.
local ages = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[3], 0, sample - 1)) do
  local f = redis.call('HMGET', base .. ':job:' .. id, 'enqueued_at', 'run_at')
  local since = math.max(tonumber(f[1] or '') or now, tonumber(f[2] or '') or 0)
  ages[#ages + 1] = math.max(0, now - since)
end
table.sort(ages)
local function pct(p)
  if #ages == 0 then return 0 end
  return ages[math.max(1, math.ceil(#ages * p))]
end
row[14], row[15], row[16] = pct(0.5), pct(0.95), pct(1.0)
redis.call('HSET', KEYS[1], minute, table.concat(row, ','))
-- Bounded: drop samples out of the window and anything that is not a minute (once a minute,
-- over at most `keep` fields: cheap).
for _, m in ipairs(redis.call('HKEYS', KEYS[1])) do
  local n = tonumber(m)
  if n == nil or n <= minute - keep or n > minute then redis.call('HDEL', KEYS[1], m) end
end
redis.call('PEXPIRE', KEYS[1], keep * 60000)
return 1
