-- A job's failure history: a JSON array kept as a string; appending is a string splice (no
-- decode/encode of the whole history). Returns the new value: the caller stores it with the
-- job's next state (one HSET).
local function errors_with(k, err_json)
  local cur = redis.call('HGET', k, 'errors')
  if not cur or cur == '' or cur == '[]' then
    return '[' .. err_json .. ']'
  end
  return string.sub(cur, 1, -2) .. ',' .. err_json .. ']'
end

local function err_json(attempt, kind, etype, message, worker, started, ended)
  return cjson.encode({attempt = attempt, kind = kind, type = etype, message = message,
    traceback = '', worker = worker, started_at = started, ended_at = ended})
end
