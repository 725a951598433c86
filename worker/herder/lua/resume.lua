-- Resume a paused queue and wake idle workers for what is ready. ARGV: base
redis.call('DEL', K_PAUSED)
wakes = redis.call('ZCARD', K_READY) + redis.call('ZCARD', K_READYC) + 1
flush_wakes()
return 1
