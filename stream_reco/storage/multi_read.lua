#!lua flags=no-writes
-- Batched reads: one command for many keys, so a request pays one round trip and one reply
-- parse instead of one per key (redis-py spends ~40 us of Python per command). Read-only.
-- ARGV[1] = 'zrev' (top ARGV[2] members of each sorted set, with scores) | 'hash' (HGETALL)
local out = {}
if ARGV[1] == 'zrev' then
  local last = tonumber(ARGV[2]) - 1
  for i, key in ipairs(KEYS) do
    out[i] = redis.call('ZREVRANGE', key, 0, last, 'WITHSCORES')
  end
else
  for i, key in ipairs(KEYS) do
    out[i] = redis.call('HGETALL', key)
  end
end
return out
