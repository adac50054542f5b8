-- Apply a short run of clickstream events in order, each at most once (dedup per session and
-- event_id). Guarantees: a redelivered event changes nothing; an event's session state and its
-- global-model updates move together or not at all; every structure stays within its cap.
-- One call carries several events so the client packs one command, not one per event; the
-- caller keeps runs short (Redis serves nobody else while a script runs).
-- ARGV 1: the store's static config, JSON {ttl, dedup_ttl, max_events, max_items, window, neighbours_max,
--         popular_max, seq_window, sknn_per_item, sknn_ttl, pop, catpop, clock, applied, session,
--         dedup,
--         co, next, sessions, meta}: key names and the
--         pieces that wrap an id into a key, all made by storage/keys.py (the one key builder)
-- ARGV 2: the events, JSON [[event_id, session_id, type, item, ts (string: exact), quantity,
--         user_id ('' = none), learn (1/0), log2 of the pair weight at the epoch for the
--         co-occurrence half-life, the same for popularity (null: adds nothing; decay.py),
--         session-list entry ("item\31type\31ts")], ...]
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
  for _, key in ipairs({recent, cart, bought, info}) do
    redis.call('EXPIRE', key, ttl)
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

local clock = tonumber(redis.call('GET', cfg.clock) or '0')
local clock_text = nil  -- the newest event time seen, written once per call
local results = {}
local applied = 0
for n, ev in ipairs(events) do
  local event_id, sid, etype, item, ts_text = ev[1], ev[2], ev[3], ev[4], ev[5]
  local dedup = key(cfg.dedup, sid, event_id)
  if redis.call('SET', dedup, '1', 'NX', 'EX', cfg.dedup_ttl) then
    local previous = update_session(sid, etype, item, ts_text, ev[6], ev[7], ev[11])
    if ev[8] == 1 then
      learn(item, previous, ev[9], ev[10])
      remember_session(sid, item, ts_text)
      -- An item's own events renew its lists' lifetime: an item nobody views any more leaves
      -- no keys behind.
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
end
if clock_text then
  redis.call('SET', cfg.clock, clock_text)
end
if applied > 0 then
  -- How far ingestion has got, counted by the store itself (benchmarks and metrics read it).
  redis.call('INCRBY', cfg.applied, applied)
end
return results
