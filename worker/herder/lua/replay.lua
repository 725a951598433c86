-- replay: dead (or cancelled) jobs back to ready: attempts reset, failure history kept, replays
-- counted. A job whose parent is itself dead is replayed only after that parent (within this
-- batch); otherwise it is reported and left in the DLQ.
-- KEYS: ready readyc scheduled waiting dead stats wake
-- ARGV: 1 key base, 2.. job ids
-- Reply: one {code, detail} per id: {'ok', new state} | {'notfound', ''} | {'state', current
--        state (not replayable)} | {'blocked', dead parent id}. Decoded by herder.replies.
-- @include time
-- @include state
local now = now_ms()
local todo = {}
for i = 2, #ARGV do todo[#todo + 1] = ARGV[i] end
local result = {}
local progress = true
while progress do
  progress = false
  local rest = {}
  for _, id in ipairs(todo) do
    local k = job_key(id)
    local st = redis.call('HGET', k, 'state')
    if not st then
      result[id] = {'notfound', ''}
    elseif st ~= 'dead' and st ~= 'cancelled' then
      result[id] = {'state', st}
    else
      local parents = cjson.decode(redis.call('HGET', k, 'parents'))
      local regardless = redis.call('HGET', k, 'run_regardless') == '1'
      local pending, blocked = {}, nil
      for _, p in ipairs(parents) do
        local pst = redis.call('HGET', job_key(p), 'state')
        if pst == 'dead' or pst == 'cancelled' then
          if not regardless then blocked = p end
        elseif pst and pst ~= 'succeeded' then
          pending[#pending + 1] = p
        end
      end
      if blocked then
        result[id] = {'blocked', blocked}
        rest[#rest + 1] = id
      else
        redis.call('ZREM', K_DEAD, id)
        redis.call('HSET', k, 'attempts', 0, 'dead_reason', '', 'finished_at', '', 'result', '',
          'worker', '', 'lease', '', 'cancel', '0', 'run_at', '')
        redis.call('HINCRBY', k, 'replays', 1)
        redis.call('HINCRBY', K_STATS, 'replayed', 1)
        if #pending > 0 then
          for _, p in ipairs(pending) do redis.call('SADD', children_key(p), id) end
          to_waiting(id, #pending)
        else
          to_ready(id, true)
        end
        result[id] = {'ok', redis.call('HGET', k, 'state')}
        progress = true
      end
    end
  end
  todo = rest
end
flush_stats()
flush_wakes()
local out = {}
for i = 2, #ARGV do out[#out + 1] = result[ARGV[i]] end
return out
