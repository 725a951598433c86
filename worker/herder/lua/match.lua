-- Which of the given jobs match a filter (read-only; standalone, no lua/lib includes).
-- Used by the dashboard's job browser so a filter over thousands of jobs is one round trip
-- without shipping every job's fields to Python.
-- KEYS: 1 the first job hash (routes the call to the queue's slot); every job hash is
--       base .. ':job:' .. id, same hash tag as the queue.
-- ARGV: 1 key base, 2 task ('' = any), 3 label key ('' = any), 4 label value (nil = key only),
--       5 worker substring ('' = any), 6 has-label-value '1'|'0', then the job ids.
-- Reply: the matching ids, in the given order.
local base, task, lkey, lval, worker, has_val = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6] == '1'
local out = {}
for i = 7, #ARGV do
  local id = ARGV[i]
  local f = redis.call('HMGET', base .. ':job:' .. id, 'task', 'worker', 'labels', 'state')
  local ok = f[4] ~= false
  if ok and task ~= '' then ok = f[1] == task end
  if ok and worker ~= '' then ok = f[2] ~= false and string.find(f[2], worker, 1, true) ~= nil end
  if ok and lkey ~= '' then
    local good, labels = pcall(cjson.decode, f[3] or '')
    ok = good and type(labels) == 'table' and labels[lkey] ~= nil
      and (not has_val or labels[lkey] == lval)
  end
  if ok then out[#out + 1] = id end
end
return out
