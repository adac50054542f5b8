-- A Redis Cluster's first step of a batch (storage/split.py): the events of sessions in one
-- hash slot join their sessions, as apply_event.lua does on a single node, and each returns
-- its plan: what it teaches item lists (items.lua), for the item and shop-wide steps after.
-- Exactly once across a crash between the steps: each plan waits in its session's outbox
-- until the shop-wide step has passed its offset, and a redelivery (the same position and
-- offset) gets its kept plan back instead of being applied again; an event whose id the
-- session already holds at another offset is a storefront's re-send, and does nothing.
-- KEYS: every key the call touches, per session: recent, cart, bought, info, ids, items, outbox
--       (the cluster routes the call by them and refuses keys of another slot).
-- ARGV 2: this slot's events of the batch, in order, as apply_event.lua reads them.
-- ARGV 3: JSON {position: offset}: how far the shop-wide step has got; outbox entries at or
--         before it are dropped (the client leaves such events out).
-- Returns per event {status, row, ...}: status 1 applied now, 2 applied by an unfinished
-- earlier try (its kept rows), 0 seen before (none); rows {target, list, member, value}:
-- list co|next (value: log2 weight) or own (member: the session, value: the event time).
local events = cjson.decode(ARGV[2])
local watermark = cjson.decode(ARGV[3])
local OUTBOX_MAX = cfg.max_events  -- per session: more would mean a batch larger than a session

local function prune(outbox)
  local kept = redis.call('HGETALL', outbox)
  for i = 1, #kept, 2 do
    local entry = cjson.decode(kept[i + 1])
    local upto = watermark[entry[1]]
    if entry[1] == '' or (upto and tonumber(entry[2]) <= tonumber(upto)) then
      redis.call('HDEL', outbox, kept[i])
    end
  end
end

local function new_rows(ev, previous)
  local rows = {}
  if ev[8] ~= 1 then
    return rows
  end
  plan(ev[4], previous, ev[9], function(target, list, member, log_w)
    rows[#rows + 1] = {target, list, member, string.format('%.17g', log_w)}
  end)
  rows[#rows + 1] = {ev[4], 'own', ev[2], ev[5]}
  remember_items(ev[2], ev[4])
  return rows
end

local pruned = {}
local results = {}
for n, ev in ipairs(events) do
  local event_id, sid, position, offset = ev[1], ev[2], ev[12], ev[13]
  local ids, outbox = key(cfg.session, sid, 'ids'), key(cfg.session, sid, 'outbox')
  if not pruned[sid] then
    pruned[sid] = true
    prune(outbox)
  end
  if redis.call('LPOS', ids, event_id) ~= false then
    local kept = redis.call('HGET', outbox, event_id)
    local entry = kept and cjson.decode(kept)
    if entry and entry[1] == position and entry[2] == offset then
      results[n] = {2, unpack(entry[3])}
    else
      results[n] = {0}
    end
  else
    local previous = update_session(sid, ev[3], ev[4], ev[5], ev[6], ev[7], ev[11])
    local rows = new_rows(ev, previous)
    redis.call('LPUSH', ids, event_id)
    redis.call('LTRIM', ids, 0, cfg.max_events - 1)
    redis.call('EXPIRE', ids, cfg.ttl)
    if redis.call('HLEN', outbox) < OUTBOX_MAX then
      redis.call('HSET', outbox, event_id, cjson.encode({position, offset, rows}))
      redis.call('EXPIRE', outbox, cfg.ttl)
    end
    results[n] = {1, unpack(rows)}
  end
end
return results
