-- resume: unpause a queue and wake idle workers for what is ready.
-- KEYS: ready readyc paused wake
-- ARGV: 1 key base
-- Reply: 1
-- @include wake
redis.call('DEL', K_PAUSED)
wakes = redis.call('ZCARD', K_READY) + redis.call('ZCARD', K_READYC) + 1
flush_wakes()
return 1
