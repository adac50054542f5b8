-- A Redis Cluster's last step of a batch (storage/split.py), in the shop-wide {g} slot: the
-- batch's popularity, the clock, the count of applied events, and each position's offset,
-- written together. It commits the batch: events at or before a position's offset are done,
-- and the steps before skip them from then on.
-- KEYS: pop, clock, applied, offsets, and pop:cat:<category> of each category named.
-- ARGV 2: JSON [[position, offset, item, pop log2 weight or null, category, ts, counted], ...]
--         in batch order: every event after the offsets, those seen before too (counted 0).
-- ARGV 3: JSON {position: offset}: how far the caller knows it applied each position; a
--         store behind that lost acknowledged writes: refused (error REWOUND).
for position, offset in pairs(cjson.decode(ARGV[3])) do
  local last = redis.call('HGET', cfg.offsets, position) or '-1'
  if tonumber(last) < tonumber(offset) then
    return redis.error_reply(string.format('REWOUND %s: at %s, had reached %s', position,
      last, offset))
  end
end
local done, moved = {}, {}
local clock = tonumber(redis.call('GET', cfg.clock) or '0')
local clock_text = nil
local applied = 0
for _, ev in ipairs(cjson.decode(ARGV[2])) do
  local position, offset, item, pop_inc, category, ts_text, counted = unpack(ev)
  local fresh = true
  if position ~= '' then
    if done[position] == nil then
      done[position] = tonumber(redis.call('HGET', cfg.offsets, position) or '-1')
    end
    fresh = tonumber(offset) > done[position]
  end
  if fresh and counted == 1 then
    count_popular(item, pop_inc, category)
    if tonumber(ts_text) > clock then
      clock, clock_text = tonumber(ts_text), ts_text
    end
    applied = applied + 1
  end
  if position ~= '' and fresh then
    done[position] = tonumber(offset)
    moved[position] = offset
  end
end
commit(moved, clock_text, applied)
return applied
