-- Apply one clickstream event atomically and at most once (dedup by event_id).
-- Guarantees: a redelivered event_id changes nothing; session state and global models move
-- together or not at all; every structure stays within its cap.
-- KEYS: 1 dedup, 2 recent, 3 cart, 4 bought, 5 info, 6 popularity, 7 clock
-- ARGV: 1 type, 2 item, 3 ts, 4 quantity, 5 user_id ('' = none), 6 entry (JSON [item,type,ts]),
--       7 learn (1/0), 8 pair weight * cooc forward factor, 9 weight * pop forward factor,
--       10 session ttl s, 11 dedup ttl s, 12 session max events, 13 cooc window,
--       14 neighbours max, 15 popular max, 16 item key prefix, 17 item co-occurrence key suffix
-- Returns 1 when applied, 0 when the event_id was seen before.
-- (Item keys are built here, so on Redis Cluster this script must be split: see DESIGN.md.)

if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[11]) then
  return 0
end

local etype, item, ts = ARGV[1], ARGV[2], tonumber(ARGV[3])
local qty = tonumber(ARGV[4])
local max_events = tonumber(ARGV[12])
local ttl = ARGV[10]

-- Previous items are read before this event joins the session: they are its pair partners.
local previous = redis.call('LRANGE', KEYS[2], 0, max_events - 1)

-- Session state ---------------------------------------------------------------------------
redis.call('LPUSH', KEYS[2], ARGV[6])
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
redis.call('HSETNX', KEYS[5], 'first_ts', ts)
local last = tonumber(redis.call('HGET', KEYS[5], 'last_ts') or '0')
if ts > last then
  redis.call('HSET', KEYS[5], 'last_ts', ts)
end
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[5], 'user_id', ARGV[5])
end
redis.call('HINCRBY', KEYS[5], 'events', 1)
for i = 2, 5 do
  redis.call('EXPIRE', KEYS[i], ttl)
end

-- Global learning (skipped in frozen evaluation and for untrusted traffic) ------------------
local clock = tonumber(redis.call('GET', KEYS[7]) or '0')
if ts > clock then
  redis.call('SET', KEYS[7], ts)
end
if ARGV[7] ~= '1' then
  return 1
end

local function capped_incr(key, by, member, cap)
  redis.call('ZINCRBY', key, by, member)
  local n = redis.call('ZCARD', key)
  if n > cap then
    -- Lowest forward-decayed score = lowest decayed value now: that neighbour goes.
    redis.call('ZREMRANGEBYRANK', key, 0, n - cap - 1)
  end
end

local pop_inc = tonumber(ARGV[9])
if pop_inc > 0 then
  capped_incr(KEYS[6], pop_inc, item, tonumber(ARGV[15]))
end

local pair_inc = tonumber(ARGV[8])
if pair_inc > 0 then
  local window, cap = tonumber(ARGV[13]), tonumber(ARGV[14])
  local kp, ks = ARGV[16], ARGV[17]
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
