-- Shared by the event scripts (storage/scripts.py puts it after `local cfg = ...`, before each
-- script's own body): decayed sums, key names.
local LN2 = math.log(2)

-- Decayed sums are stored as log2 of their value at the epoch (decay.py): adding is a
-- log-sum-exp, which never overflows whatever the event times and their order.
local function capped_add(key, log_w, member, cap, lifetime)
  local old = redis.call('ZSCORE', key, member)
  if old then
    local hi, lo = tonumber(old), log_w
    if lo > hi then hi, lo = lo, hi end
    -- %.17g: every digit of the sum, whatever the conversion redis.call applies.
    local sum = hi + math.log(1 + 2 ^ (lo - hi)) / LN2
    redis.call('ZADD', key, string.format('%.17g', sum), member)
    return
  end
  redis.call('ZADD', key, string.format('%.17g', log_w), member)
  -- Only a new member can push the set over its cap: count then.
  local n = redis.call('ZCARD', key)
  if n == 1 and lifetime then
    -- Just made (by whichever session): it expires even if its item is never seen again;
    -- the item's own events renew it.
    redis.call('EXPIRE', key, lifetime)
  end
  if n > cap then
    -- Lowest stored score = lowest decayed value at any time: that neighbour goes.
    redis.call('ZREMRANGEBYRANK', key, 0, n - cap - 1)
  end
end

local function key(pieces, id, name)
  return pieces[1] .. id .. pieces[2] .. (name or '')
end

-- A pcall's failure as the script's error reply (what ran before it stays written).
local function failed(failure)
  if type(failure) == 'table' and failure.err then
    return redis.error_reply(failure.err)
  end
  return redis.error_reply(tostring(failure))
end

-- The shop-wide marks a call moves once, after its events: each position's last offset
-- ({position: offset text}), the newest event time (text, or nil), the count of events
-- applied (how far ingestion has got, counted by the store itself: benchmarks read it).
local function commit(moved, clock_text, applied)
  local fields = {}
  for position, offset_text in pairs(moved) do
    fields[#fields + 1] = position
    fields[#fields + 1] = offset_text
  end
  if #fields > 0 then
    redis.call('HSET', cfg.offsets, unpack(fields))
  end
  if clock_text then
    redis.call('SET', cfg.clock, clock_text)
  end
  if applied > 0 then
    redis.call('INCRBY', cfg.applied, applied)
  end
end

-- A cluster step's marks ({id -> {position -> offset}}): each id's marks hash, key(pieces,
-- id, name), living as long as what it guards.
local function save_marks(reached, pieces, name, lifetime)
  for id, positions in pairs(reached) do
    local k = key(pieces, id, name)
    for position, offset in pairs(positions) do
      redis.call('HSET', k, position, offset)
    end
    redis.call('EXPIRE', k, lifetime)
  end
end
