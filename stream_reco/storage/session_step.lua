-- A Redis Cluster's first step of a batch (storage/split.py): the events of sessions in one
-- hash slot join their sessions, as apply_event.lua does on a single node, and each returns
-- its plan: what it teaches item lists (items.lua), for the item and shop-wide steps after.
-- Exactly once across a crash between the steps, per session and Kafka position: the
-- session's mark (the last offset this step applied for it) tells a redelivery from a new
-- event, and each plan waits in the session's outbox until the shop-wide step has committed
-- its offset, so a redelivered event gets its kept plan back instead of being applied again.
-- An event whose id the session already holds, past the mark, is a storefront's re-send and
-- does nothing. Events without a position (not from Kafka) have ids only: applied at most
-- once, and a crash between steps can lose their item and shop-wide effects.
-- KEYS: every key the call touches, per session: recent, cart, bought, info, ids, items,
--       outbox, marks (the cluster routes the call by them and refuses keys of another slot).
-- ARGV 2: this slot's events of the batch, in order, as apply_event.lua reads them.
-- ARGV 3: JSON {position: offset}: how far the shop-wide step has got, every position the
--         store knows; outbox entries at or before it are dropped, and an event at or before
--         it is committed: seen before, answered with its session's flag only.
-- Returns per event {status, flag, row, ...}: status 1 applied now, 2 applied by an unfinished
-- earlier try (its kept rows and flag), 0 seen before (none); flag: '' or, its session flagged
-- as a bot (bots.lua: no rows), the reason, '!' before it when this event flagged it (status
-- 1, or 2 from the outbox: that try never reached its commit, so never counted it); a seen
-- before event, or a kept one whose session a later event flagged, answers the session's
-- sticky flag with '=' before it, as apply_event.lua does on one node (a kept plan's rows and
-- popularity stay what the outbox says); rows {target, list, member, value}:
-- list co|next (value: log2 weight) or own (member: the session, value: the event time).
local events = cjson.decode(ARGV[2])
local watermark = cjson.decode(ARGV[3])

local function prune(outbox)
  local kept = redis.call('HGETALL', outbox)
  for i = 1, #kept, 2 do
    local entry = cjson.decode(kept[i + 1])
    local upto = watermark[entry[1]]
    if upto and tonumber(entry[2]) <= tonumber(upto) then
      redis.call('HDEL', outbox, kept[i])
    end
  end
end

local function new_rows(ev, previous, flag)
  local rows = {}
  if ev[8] ~= 1 or flag ~= '' then
    return rows
  end
  plan(ev[4], previous, ev[9], function(target, list, member, log_w)
    rows[#rows + 1] = {target, list, member, string.format('%.17g', log_w)}
  end)
  rows[#rows + 1] = {ev[4], 'own', ev[2], ev[5]}
  remember_items(ev[2], ev[4])
  return rows
end

-- Per session and position, the last offset applied here (read once, written at the end).
local marks, reached = {}, {}
local function mark(sid, position)
  local k = sid .. '\0' .. position
  if marks[k] == nil then
    marks[k] = tonumber(redis.call('HGET', key(cfg.session, sid, 'marks'), position) or '-1')
  end
  return marks[k]
end

-- An event seen before answers its session's sticky flag, '=' before it: the caller takes it
-- as flagged, while what the event teaches stays what its kept plan says (it ran unflagged).
local function seen_flag(sid)
  local flag = flag_of(sid)
  return flag ~= '' and '=' .. flag or ''
end

local function kept_plan(sid, outbox, event_id, position, offset)
  local kept = redis.call('HGET', outbox, event_id)
  local entry = kept and cjson.decode(kept)
  if entry and entry[1] == position and entry[2] == offset then
    local flag = entry[4] or ''
    return {2, flag ~= '' and flag or seen_flag(sid), unpack(entry[3])}
  end
  return nil
end

-- Committed by the shop-wide step: the client sends such events only for their flags.
local function committed(position, offset)
  local upto = position ~= '' and watermark[position]
  return upto and tonumber(offset) <= tonumber(upto)
end

local pruned = {}
local results = {}
local function apply_all()
  for n, ev in ipairs(events) do
    local event_id, sid, position, offset = ev[1], ev[2], ev[12], ev[13]
    local ids, outbox = key(cfg.session, sid, 'ids'), key(cfg.session, sid, 'outbox')
    if not pruned[sid] then
      pruned[sid] = true
      prune(outbox)
    end
    local settled = committed(position, offset)
    local done = settled or (position ~= '' and tonumber(offset) <= mark(sid, position))
    if settled then
      results[n] = {0, seen_flag(sid)}  -- no mark to move, no plan left to give
    elseif done then
      -- This step applied it before (or found it a re-send): its kept plan if its batch is
      -- not committed yet, else nothing.
      results[n] = kept_plan(sid, outbox, event_id, position, offset) or {0, seen_flag(sid)}
    elseif redis.call('LPOS', ids, event_id) ~= false then
      -- A re-send by the storefront, or applied by a try that stopped before its marks.
      local kept = position ~= '' and kept_plan(sid, outbox, event_id, position, offset)
      results[n] = kept or {0, seen_flag(sid)}
    else
      local previous, flag, newly = update_session(sid, ev[3], ev[4], ev[5], ev[6], ev[7], ev[11])
      flag = (newly and '!' or '') .. flag
      local rows = new_rows(ev, previous, flag)
      redis.call('LPUSH', ids, event_id)
      redis.call('LTRIM', ids, 0, cfg.max_events - 1)
      redis.call('EXPIRE', ids, cfg.ttl)
      if position ~= '' then
        -- Until the commit: at most a batch's events per session (the client removes them
        -- once committed; a crash leaves them to the pruning above).
        redis.call('HSET', outbox, event_id, cjson.encode({position, offset, rows, flag}))
        redis.call('EXPIRE', outbox, cfg.ttl)
      end
      results[n] = {1, flag, unpack(rows)}
    end
    if position ~= '' and not done then
      reached[sid] = reached[sid] or {}
      reached[sid][position] = offset
    end
  end
end

-- A failing command stops the script but keeps what it wrote: the marks still cover the
-- events before it (their plans kept), so a retry applies the rest once.
local ok, failure = pcall(apply_all)
save_marks(reached, cfg.session, 'marks', cfg.ttl)
if not ok then
  return failed(failure)
end
return results
