-- Apply a short run of clickstream events in order, each at most once. Guarantees: a
-- redelivered event changes nothing; every structure stays within its cap. An event's offset
-- and id are recorded after its effects, so one whose effects failed midway (a command error
-- stops the script, keeping the commands before it) is not taken for applied when retried.
-- At most once, by two memories that both stay the size of the state, not of the traffic:
-- * per Kafka partition, the last offset applied, written with the effects it covers: a
--   redelivery from any point of the topic's retention (a restart, a rebalance, a group reset
--   to `earliest`) is recognised by its offset;
-- * per session, the ids of its last `max_events` events, living as long as the session: a
--   storefront that re-sends an event (a new offset) is recognised by its id.
-- One call carries several events so the client packs one command, not one per event; the
-- caller keeps runs short (Redis serves nobody else while a script runs).
-- ARGV 1: the store's static config, JSON {ttl, max_events, max_items, window, neighbours_max,
--         popular_max, seq_window, sknn_per_item, sknn_ttl, item_ttl, pop, catpop, clock,
--         applied, offsets, session, co, next, sessions, meta}: key names and the pieces that
--         wrap an id into a key, all made by storage/keys.py (the one key builder)
-- ARGV 2: the events, JSON [[event_id, session_id, type, item, ts (string: exact), quantity,
--         user_id ('' = none), learn (1/0: asked of this event; a session flagged as a bot
--         never learns), log2 of the pair weight at the epoch for the co-occurrence
--         half-life, the same for popularity (null: adds nothing; decay.py),
--         session-list entry ("item\31type\31ts"), position ('' = none: "<topic>:<topic id>:
--         <partition>"), offset (string: exact)], ...], each partition's in offset order
-- ARGV 3: JSON {position: offset}: what the calls before this one in the same pipeline were to
--         apply; the call refuses to run (error GAP) when one of them did not get that far.
-- ARGV 4: JSON {position: offset}: how far the caller knows it applied each position before;
--         a store behind that lost acknowledged writes: the call refuses (error REWOUND).
-- Returns per event: 1 applied, 0 seen before, or, its session flagged as a bot (bots.lua: it
-- taught nothing shared), the reason: '!' before it when this event flagged it, '=' before it
-- when the event was seen before (the session's sticky flag: a redelivery stays flagged).
-- Keys are built here, across many hash slots: a single Redis node only. On a Redis Cluster
-- the same functions (session.lua, items.lua) run as per-slot steps (storage/split.py).

local events = cjson.decode(ARGV[2])
local max_events, ttl = cfg.max_events, cfg.ttl

-- A pipeline runs every call even when one fails: were this call to go on after an earlier
-- one failed, its offsets would mark that one's events applied, and they would be lost. And a
-- store that went back in time (restored from an older snapshot) must be caught up from Kafka
-- before anything newer is applied on top of it.
for n, why in ipairs({'GAP an earlier call of this batch stopped short of', 'REWOUND'}) do
  for position, offset in pairs(cjson.decode(ARGV[2 + n])) do
    local last = redis.call('HGET', cfg.offsets, position) or '-1'
    if tonumber(last) < tonumber(offset) then
      return redis.error_reply(string.format('%s %s: at %s, had reached %s', why, position,
        last, offset))
    end
  end
end

local clock = tonumber(redis.call('GET', cfg.clock) or '0')
local clock_text = nil  -- the newest event time seen, written once per call
local done = {}  -- position -> last offset applied there, read once per call
local moved = {}  -- position -> offset text to write: one HSET per call, not one per event
local results = {}
local applied = 0

-- Whether an event was applied before: by its position (redelivered), else by its id among
-- its session's last events (re-sent).
local function seen_before(sid, event_id, position, offset_text)
  if position ~= '' then
    local last = done[position]
    if last == nil then
      last = tonumber(redis.call('HGET', cfg.offsets, position) or '-1')
      done[position] = last
    end
    if tonumber(offset_text) <= last then
      return true
    end
  end
  return redis.call('LPOS', key(cfg.session, sid, 'ids'), event_id) ~= false
end

-- After the event's effects (or its recognition as a re-send): how far its partition got,
-- and, if applied, its id among the session's last ones.
local function record(sid, event_id, position, offset_text, applied_now)
  if position ~= '' and tonumber(offset_text) > done[position] then
    moved[position] = offset_text
    done[position] = tonumber(offset_text)
  end
  if applied_now then
    local ids = key(cfg.session, sid, 'ids')
    redis.call('LPUSH', ids, event_id)
    redis.call('LTRIM', ids, 0, max_events - 1)
    redis.call('EXPIRE', ids, ttl)
  end
end

local function apply_all()
  for n, ev in ipairs(events) do
    local event_id, sid, etype, item, ts_text = ev[1], ev[2], ev[3], ev[4], ev[5]
    local again = seen_before(sid, event_id, ev[12], ev[13])
    if not again then
      local previous, flag, newly = update_session(sid, etype, item, ts_text, ev[6], ev[7], ev[11])
      -- Learning: not for frozen evaluation, untrusted traffic, nor a flagged session.
      if ev[8] == 1 and flag == '' then
        plan(item, previous, ev[9], teach)
        count_popular(item, ev[10], own(item, sid, ts_text))
        remember_items(sid, item)
      end
      if tonumber(ts_text) > clock then
        clock, clock_text = tonumber(ts_text), ts_text
      end
      results[n] = flag == '' and 1 or ((newly and '!' or '') .. flag)
      applied = applied + 1
    else
      local flag = flag_of(sid)
      results[n] = flag == '' and 0 or ('=' .. flag)
    end
    record(sid, event_id, ev[12], ev[13], not again)
  end
end

-- A failing command stops the script but keeps what it already wrote: the offsets, the clock
-- and the count of applied events still cover the events before it.
local ok, failure = pcall(apply_all)
commit(moved, clock_text, applied)
if not ok then
  return failed(failure)
end
return results
