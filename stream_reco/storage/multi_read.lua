#!lua flags=no-writes
-- Batched reads: one command for many keys, so a request pays one round trip and one reply
-- parse instead of one per key (redis-py spends ~40 us of Python per command). Read-only.
-- ARGV[1] = 'zrev': the top members of each sorted set with scores; ARGV[2] is how many, for
--           every key, or ARGV[1 + i] is how many for key i when a count is given per key
--         | 'hash': HGETALL of each key | 'set': SMEMBERS of each key
local out = {}
if ARGV[1] == 'zrev' then
  for i, key in ipairs(KEYS) do
    local n = tonumber(ARGV[i + 1] or ARGV[2])
    out[i] = redis.call('ZREVRANGE', key, 0, n - 1, 'WITHSCORES')
  end
elseif ARGV[1] == 'set' then
  for i, key in ipairs(KEYS) do
    out[i] = redis.call('SMEMBERS', key)
  end
else
  for i, key in ipairs(KEYS) do
    out[i] = redis.call('HGETALL', key)
  end
end
return out
