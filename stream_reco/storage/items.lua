-- An item's part of an event (its slot on a Redis Cluster), shared by apply_event.lua and
-- item_step.lua.

-- One row of session.lua's plan: `member` joins `target`'s co-occurrence or follow-up list.
local function teach(target, list, member, log_w)
  capped_add(key(cfg[list], target), log_w, member, cfg.neighbours_max, cfg.item_ttl)
end

-- The item's own event: the session joins its most recent sessions (session-kNN), its lists'
-- lifetime is renewed (an item nobody views any more leaves no keys behind); returns its
-- catalogue category as it is when the event arrives (false or '' when none).
local function own(item, sid, ts_text)
  local sessions = key(cfg.sessions, item)
  -- GT: a late, out-of-order event never makes the session look older than it is.
  if redis.call('ZADD', sessions, 'GT', ts_text, sid) == 1 then
    local n = redis.call('ZCARD', sessions)
    if n > cfg.sknn_per_item then
      redis.call('ZREMRANGEBYRANK', sessions, 0, n - cfg.sknn_per_item - 1)
    end
  end
  for _, name in ipairs({cfg.co, cfg.next, cfg.sessions}) do
    redis.call('EXPIRE', key(name, item), cfg.item_ttl)
  end
  return redis.call('HGET', key(cfg.meta, item), 'category')
end

-- The shop-wide part (the {g} slot): popularity, overall and in the item's category.
local function count_popular(item, pop_inc, category)
  if pop_inc == cjson.null then
    return
  end
  capped_add(cfg.pop, pop_inc, item, cfg.popular_max)
  if category and category ~= '' then
    capped_add(cfg.catpop .. category, pop_inc, item, cfg.popular_max)
  end
end
