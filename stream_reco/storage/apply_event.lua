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
--         user_id ('' = none), learn (1/0), log2 of the pair weight at the epoch for the
--         co-occurrence half-life, the same for popularity (null: adds nothing; decay.py),
--         session-list entry ("item\31type\31ts"), position ('' = none: "<topic>:<topic id>:
--         <partition>"), offset (string: exact)], ...], each partition's in offset order
-- ARGV 3: JSON {position: offset}: what the calls before this one in the same pipeline were to
--         apply; the call refuses to run (error GAP) when one of them did not get that far.
-- ARGV 4: JSON {position: offset}: how far the caller knows it applied each position before;
--         a store behind that lost acknowledged writes: the call refuses (error REWOUND).
-- Returns one number per event: 1 applied, 0 seen before.
-- (Keys are built here, so on Redis Cluster this script must be split: see DESIGN.md.)

local cfg = cjson.decode(ARGV[1])
local events = cjson.decode(ARGV[2])
local max_events, ttl = cfg.max_events, cfg.ttl

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

-- Session state: the event joins its session; returns the items seen before it.
local function update_session(sid, etype, item, ts_text, qty, user, entry)
  local recent, cart = key(cfg.session, sid, 'recent'), key(cfg.session, sid, 'cart')
  local bought, info = key(cfg.session, sid, 'bought'), key(cfg.session, sid, 'info')
  -- Previous items are read before this event joins: they are its pair partners. Three per
  -- window slot is plenty to find `window` distinct ones in all but looping sessions.
  local previous = redis.call('LRANGE', recent, 0, math.min(max_events, 3 * cfg.window) - 1)
  redis.call('LPUSH', recent, entry)
  redis.call('LTRIM', recent, 0, max_events - 1)
  -- The cart and the purchases hold at most max_items distinct items: past that, a new item
  -- joins the session's recent events only (one abusive session cannot make every answer for
  -- it read thousands of items).
  if etype == 'add_to_cart' then
    if redis.call('HEXISTS', cart, item) == 1 or redis.call('HLEN', cart) < cfg.max_items then
      redis.call('HINCRBY', cart, item, qty)
    end
  elseif etype == 'remove_from_cart' then
    if redis.call('HINCRBY', cart, item, -qty) <= 0 then
      redis.call('HDEL', cart, item)
    end
  elseif etype == 'purchase' then
    if redis.call('SCARD', bought) < cfg.max_items then
      redis.call('SADD', bought, item)
    end
    redis.call('HDEL', cart, item)
  end
  local last = tonumber(redis.call('HGET', info, 'last_ts') or '0')
  if tonumber(ts_text) > last then
    redis.call('HSET', info, 'last_ts', ts_text)
  end
  if user ~= '' then
    redis.call('HSET', info, 'user_id', user)
  end
  redis.call('HINCRBY', info, 'events', 1)
  for _, k in ipairs({recent, cart, bought, info}) do
    redis.call('EXPIRE', k, ttl)
  end
  return previous
end

-- Session-kNN index: the item's most recent sessions (by event time), and the session's items
-- kept past its own TTL so later sessions can find it as a neighbour.
local function remember_session(sid, item, ts_text)
  local sessions = key(cfg.sessions, item)
  -- GT: a late, out-of-order event never makes the session look older than it is.
  if redis.call('ZADD', sessions, 'GT', ts_text, sid) == 1 then
    local n = redis.call('ZCARD', sessions)
    if n > cfg.sknn_per_item then
      redis.call('ZREMRANGEBYRANK', sessions, 0, n - cfg.sknn_per_item - 1)
    end
  end
  local items = key(cfg.session, sid, 'items')
  if redis.call('SCARD', items) < max_events then
    redis.call('SADD', items, item)
  end
  redis.call('EXPIRE', items, cfg.sknn_ttl)
end

-- Global learning (skipped in frozen evaluation and for untrusted traffic).
local function learn(item, previous, pair_inc, pop_inc)
  if pop_inc ~= cjson.null then
    capped_add(cfg.pop, pop_inc, item, cfg.popular_max)
    -- Trending per category: the catalogue's category as it is when the event arrives.
    local category = redis.call('HGET', key(cfg.meta, item), 'category')
    if category and category ~= '' then
      capped_add(cfg.catpop .. category, pop_inc, item, cfg.popular_max)
    end
  end
  if pair_inc == cjson.null then
    return
  end
  local seen, paired = {}, 0
  for steps, raw in ipairs(previous) do
    local other = string.sub(raw, 1, string.find(raw, '\31', 1, true) - 1)
    if steps <= cfg.seq_window then
      -- Sequence: `item` came `steps` events after `other` (repeats included, as people do
      -- view an item again); nearer follow-ups count more.
      capped_add(key(cfg.next, other), pair_inc - math.log(steps) / LN2, item,
        cfg.neighbours_max, cfg.item_ttl)
    end
    if paired < cfg.window and other ~= item and not seen[other] then
      seen[other] = true
      capped_add(key(cfg.co, other), pair_inc, item, cfg.neighbours_max, cfg.item_ttl)
      capped_add(key(cfg.co, item), pair_inc, other, cfg.neighbours_max, cfg.item_ttl)
      paired = paired + 1
    end
    if paired >= cfg.window and steps >= cfg.seq_window then
      break
    end
  end
end

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
      local previous = update_session(sid, etype, item, ts_text, ev[6], ev[7], ev[11])
      if ev[8] == 1 then
        learn(item, previous, ev[9], ev[10])
        remember_session(sid, item, ts_text)
        -- An item's own events renew its lists' lifetime: an item nobody views any more
        -- leaves no keys behind.
        for _, name in ipairs({cfg.co, cfg.next, cfg.sessions}) do
          redis.call('EXPIRE', key(name, item), cfg.item_ttl)
        end
      end
      if tonumber(ts_text) > clock then
        clock, clock_text = tonumber(ts_text), ts_text
      end
      results[n] = 1
      applied = applied + 1
    else
      results[n] = 0
    end
    record(sid, event_id, ev[12], ev[13], not again)
  end
end

-- A failing command stops the script but keeps what it already wrote: the offsets, the clock
-- and the count of applied events still cover the events before it.
local ok, failure = pcall(apply_all)
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
  -- How far ingestion has got, counted by the store itself (benchmarks and metrics read it).
  redis.call('INCRBY', cfg.applied, applied)
end
if not ok then
  if type(failure) == 'table' and failure.err then
    return redis.error_reply(failure.err)
  end
  return redis.error_reply(tostring(failure))
end
return results
