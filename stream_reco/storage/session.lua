-- A session's part of an event (its slot on a Redis Cluster), shared by apply_event.lua and
-- session_step.lua: the session's state, and the plan of what the event teaches item lists.

-- Session state: the event joins its session, and the bot guard counts it (bots.lua: its state
-- is a field of the session's info hash, read and written with the fields there anyway);
-- returns the items seen before it, the reason the session is flagged as a bot ('' none) and
-- whether this event flagged it.
local function update_session(sid, etype, item, ts_text, qty, user, entry)
  local max_events = cfg.max_events
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
  local got = redis.call('HMGET', info, 'last_ts', 'bot')
  local fields = {}
  if tonumber(ts_text) > tonumber(got[1] or '0') then
    fields[#fields + 1], fields[#fields + 2] = 'last_ts', ts_text
  end
  if user ~= '' then
    fields[#fields + 1], fields[#fields + 2] = 'user_id', user
  end
  local flag, newly, state = watch(sid, etype, item, ts_text, previous, got[2])
  if state then
    fields[#fields + 1], fields[#fields + 2] = 'bot', state
  end
  if #fields > 0 then
    redis.call('HSET', info, unpack(fields))
  end
  redis.call('HINCRBY', info, 'events', 1)
  for _, k in ipairs({recent, cart, bought, info}) do
    redis.call('EXPIRE', k, cfg.ttl)
  end
  return previous, flag, newly
end

-- Session-kNN's half in the session: its items, kept past its own TTL so later sessions can
-- find it as a neighbour (the item's half is items.lua `own`).
local function remember_items(sid, item)
  local items = key(cfg.session, sid, 'items')
  if redis.call('SCARD', items) < cfg.max_events then
    redis.call('SADD', items, item)
  end
  redis.call('EXPIRE', items, cfg.sknn_ttl)
end

-- What the event teaches other items' lists (skipped in frozen evaluation and for untrusted
-- traffic): emit(target item, list (co|next), member, log2 weight) per row, in this order; on
-- one node `emit` applies it (items.lua `teach`), on a cluster it joins the plan for the
-- target's slot. A callback, not a table of rows: the single node's path allocates nothing.
local function plan(item, previous, pair_inc, emit)
  if pair_inc == cjson.null then
    return
  end
  local seen, paired = {}, 0
  for steps, raw in ipairs(previous) do
    local other = string.sub(raw, 1, string.find(raw, '\31', 1, true) - 1)
    if steps <= cfg.seq_window then
      -- Sequence: `item` came `steps` events after `other` (repeats included, as people do
      -- view an item again); nearer follow-ups count more.
      emit(other, 'next', item, pair_inc - math.log(steps) / LN2)
    end
    if paired < cfg.window and other ~= item and not seen[other] then
      seen[other] = true
      emit(other, 'co', item, pair_inc)
      emit(item, 'co', other, pair_inc)
      paired = paired + 1
    end
    if paired >= cfg.window and steps >= cfg.seq_window then
      break
    end
  end
end
