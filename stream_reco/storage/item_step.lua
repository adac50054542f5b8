-- A Redis Cluster's second step of a batch (storage/split.py): the rows the session step
-- planned for items in one hash slot, applied to their lists in batch order (items.lua).
-- Exactly once: per item and position, the last offset whose rows were applied (the item's
-- `marks` hash, living as long as its lists); a row at or before it is skipped, so a batch
-- tried again after a crash between steps applies each row once.
-- KEYS: per target item: co, next, sessions, meta, marks.
-- ARGV 2: JSON [[position, offset, event index, target, list, member, value], ...].
-- Returns {event index, category, ...} for each `own` row (category '' when none), skipped or
-- not: the shop-wide step counts popularity per category.
local rows = cjson.decode(ARGV[2])
local start = {}  -- target -> {position -> offset}: the marks as the call found them
local reached = {}  -- the same, for events whose rows all went through
local pending = {}  -- the current event's {target, position, offset}
local out = {}

local function mark(target, position)
  local known = start[target]
  if not known then
    known = {}
    start[target] = known
  end
  if known[position] == nil then
    known[position] = tonumber(redis.call('HGET', key(cfg.marks, target), position) or '-1')
  end
  return known[position]
end

local function settle()
  for _, p in ipairs(pending) do
    reached[p[1]] = reached[p[1]] or {}
    reached[p[1]][p[2]] = p[3]
  end
  pending = {}
end

local function apply_all()
  local current = nil
  for _, r in ipairs(rows) do
    local position, offset, index, target, list, member, value = unpack(r)
    if index ~= current then
      settle()
      current = index
    end
    local skip = position ~= '' and tonumber(offset) <= mark(target, position)
    if list == 'own' then
      local category
      if skip then
        category = redis.call('HGET', key(cfg.meta, target), 'category')
      else
        category = own(target, member, value)
      end
      out[#out + 1] = index
      out[#out + 1] = category or ''
    elseif not skip then
      teach(target, list, member, tonumber(value))
    end
    if position ~= '' and not skip then
      pending[#pending + 1] = {target, position, offset}
    end
  end
  settle()
end

-- A failing command stops the script but keeps what it wrote: the marks still cover the
-- events before it, so a retry applies the rest once.
local ok, failure = pcall(apply_all)
save_marks(reached, cfg.marks, nil, cfg.item_ttl)
if not ok then
  return failed(failure)
end
return out
