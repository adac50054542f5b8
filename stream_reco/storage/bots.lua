-- The bot and abuse guard, in a session's part of an event (its slot on a Redis Cluster), so it
-- runs exactly once with the session's own effects: a redelivery or re-send never counts twice,
-- and the same events in the same order give the same flags (bots.py holds the rules, their
-- Python replica and the limits; docs/reliability.md, "Bot and abuse guard").
-- Per session one short value, the field `bot` of its info hash (48 bytes and the flag), living
-- as long as the session, read and written with the fields update_session reads and writes
-- anyway (no command of its own): minute buckets in event time (never the wall clock), a window
-- sliding over the current and the previous one, of its events, its new items (not among the
-- previous events the session step reads anyway) and its cart additions, the events of its
-- latest second (a burst no hand can click), the run of identical events; packed (BOT_PACK:
-- minute, events, new, carts, the previous minute's three, repeats, second, in that second),
-- then the sticky flag as text ('' none; bots.py `state` reads it).
local BOT_PACK = '<di4i4i4i4i4i4i4di4'
local MINUTE_MS = 60000
local BOT_LIMITS = {'bot_rate', 'bot_items', 'bot_carts', 'bot_repeats', 'bot_burst'}
local BOT_REASONS = {'rate', 'items', 'carts', 'repeats', 'burst'}
local BOT_FIELDS = 10

local function bot_state(raw)
  if not raw then
    return {-1, 0, 0, 0, 0, 0, 0, 0, -1, 0}, ''
  end
  local s = {struct.unpack(BOT_PACK, raw)}
  -- unpack's last value is where the packed part ends: the flag follows.
  return s, string.sub(raw, s[BOT_FIELDS + 1])
end

-- The session's sticky flag as stored ('' none): the answer for an event seen before, so every
-- event of a flagged session reads as flagged, new or redelivered (a redelivered one would
-- otherwise be taken for learnable by the caller: profiles, learner examples, attribution).
local function flag_of(sid)
  if not cfg.bot_on then
    return ''
  end
  local raw = redis.call('HGET', key(cfg.session, sid, 'info'), 'bot')
  local _, flag = bot_state(raw or nil)
  return flag
end

-- Counts the event; returns the reason its session is flagged ('' none), whether this event
-- flagged it, and the state to store (nil: none to store, the guard is off). `previous`: the
-- session's events before it; `raw`: the state as stored (nil: none yet).
local function watch(sid, etype, item, ts_text, previous, raw)
  if not cfg.bot_on then
    return '', false, nil
  end
  local s, flag = bot_state(raw)
  if flag ~= '' then  -- for good: nothing left to count
    return flag, false, nil
  end
  local ts = tonumber(ts_text)
  local m = math.floor(ts / MINUTE_MS)
  if m > s[1] then
    if m == s[1] + 1 then
      s[5], s[6], s[7] = s[2], s[3], s[4]
    else
      s[5], s[6], s[7] = 0, 0, 0
    end
    s[1], s[2], s[3], s[4] = m, 0, 0, 0
  end
  local new, same = 1, false
  local head = item .. '\31'
  for n, entry in ipairs(previous) do
    if string.sub(entry, 1, #head) == head then
      new = 0
      same = n == 1 and string.sub(entry, #head + 1, #head + #etype + 1) == etype .. '\31'
      break
    end
  end
  s[2], s[3] = s[2] + 1, s[3] + new
  if etype == 'add_to_cart' then
    s[4] = s[4] + 1
  end
  s[8] = same and s[8] + 1 or 1
  local second = math.floor(ts / 1000)
  if second > s[9] then
    s[9], s[10] = second, 0
  end
  s[10] = s[10] + 1
  local newly = false
  -- What of the previous minute still lies within the last 60 s of this event's time, measured
  -- from the bucket's start (s[1]), not the event's own minute: a late event, before its
  -- bucket's start, sees all of it (the safe side: it can only flag sooner).
  local left = 1 - math.max(0, ts - s[1] * MINUTE_MS) / MINUTE_MS
  local value = {s[2] + s[5] * left, s[3] + s[6] * left, s[4] + s[7] * left, s[8], s[10]}
  for i, name in ipairs(BOT_LIMITS) do
    local limit = cfg[name]
    if limit > 0 and value[i] > limit then
      flag, newly = BOT_REASONS[i], true
      -- Its earlier events stop voting in session-kNN too: the item lists keep its id, with
      -- nothing behind it.
      redis.call('DEL', key(cfg.session, sid, 'items'))
      break
    end
  end
  local packed = struct.pack(BOT_PACK, s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8], s[9], s[10])
  return flag, newly, packed .. flag
end
