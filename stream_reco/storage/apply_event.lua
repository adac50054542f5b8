-- Apply one clickstream event atomically and at most once (dedup by event_id).
-- Guarantees: a redelivered event_id changes nothing; session state and global models move
-- together or not at all; every structure stays within its cap.
-- KEYS (all in the session's cluster slot): 1 dedup, 2 recent, 3 cart, 4 bought, 5 info
-- ARGV 1: the store's static config, JSON {ttl, dedup_ttl, max_events, window, neighbours_max,
--         popular_max, pop, clock, item_prefix, co_suffix} (one cached string: few args to pack)
-- ARGV 2: the event, JSON [type, item, ts (string: exact), quantity, user_id ('' = none),
--         learn (1/0), pair weight x cooc forward factor, weight x pop forward factor]
-- ARGV 3: the session-list entry, JSON [item, type, ts]
-- Returns 1 when applied, 0 when the event_id was seen before.
-- (Global keys are built here, so on Redis Cluster this script must be split: see DESIGN.md.)

local cfg = cjson.decode(ARGV[1])
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', cfg.dedup_ttl) then
  return 0
end

local ev = cjson.decode(ARGV[2])
local etype, item, ts_text, qty, user = ev[1], ev[2], ev[3], ev[4], ev[5]
local ts = tonumber(ts_text)
local max_events = cfg.max_events
local ttl = cfg.ttl

-- Previous items are read before this event joins the session: they are its pair partners.
local previous = redis.call('LRANGE', KEYS[2], 0, max_events - 1)

-- Session state ---------------------------------------------------------------------------
redis.call('LPUSH', KEYS[2], ARGV[3])
redis.call('LTRIM', KEYS[2], 0, max_events - 1)
if etype == 'add_to_cart' then
  redis.call('HINCRBY', KEYS[3], item, qty)
elseif etype == 'remove_from_cart' then
  if redis.call('HINCRBY', KEYS[3], item, -qty) <= 0 then
    redis.call('HDEL', KEYS[3], item)
  end
elseif etype == 'purchase' then
  redis.call('SADD', KEYS[4], item)
  redis.call('HDEL', KEYS[3], item)
end
redis.call('HSETNX', KEYS[5], 'first_ts', ts_text)
local last = tonumber(redis.call('HGET', KEYS[5], 'last_ts') or '0')
if ts > last then
  redis.call('HSET', KEYS[5], 'last_ts', ts_text)
end
if user ~= '' then
  redis.call('HSET', KEYS[5], 'user_id', user)
end
redis.call('HINCRBY', KEYS[5], 'events', 1)
for i = 2, 5 do
  redis.call('EXPIRE', KEYS[i], ttl)
end

-- Global learning (skipped in frozen evaluation and for untrusted traffic) ------------------
local clock = tonumber(redis.call('GET', cfg.clock) or '0')
if ts > clock then
  redis.call('SET', cfg.clock, ts_text)
end
if ev[6] ~= 1 then
  return 1
end

local function capped_incr(key, by, member, cap)
  local score = tonumber(redis.call('ZINCRBY', key, by, member))
  -- Only a new member can push the set over its cap (its score is just `by`): count then.
  if score <= by * 1.0000001 then
    local n = redis.call('ZCARD', key)
    if n > cap then
      -- Lowest forward-decayed score = lowest decayed value now: that neighbour goes.
      redis.call('ZREMRANGEBYRANK', key, 0, n - cap - 1)
    end
  end
end

local pop_inc = ev[8]
if pop_inc > 0 then
  capped_incr(cfg.pop, pop_inc, item, cfg.popular_max)
end

local pair_inc = ev[7]
if pair_inc > 0 then
  local window, cap = cfg.window, cfg.neighbours_max
  local kp, ks = cfg.item_prefix, cfg.co_suffix
  local seen, paired = {}, 0
  for _, raw in ipairs(previous) do
    local other = cjson.decode(raw)[1]
    if other ~= item and not seen[other] then
      seen[other] = true
      capped_incr(kp .. other .. ks, pair_inc, item, cap)
      capped_incr(kp .. item .. ks, pair_inc, other, cap)
      paired = paired + 1
      if paired >= window then
        break
      end
    end
  end
end
return 1
