#!lua flags=no-writes
-- Everything a recommendation reads before ranking, in one read-only call: the session, then
-- the lists its items lead to. One round trip instead of two, and one reply to parse.
-- The items are chosen here as candidates/cooccurrence.py and candidates/sessions.py choose
-- them (the client re-derives its weights from the returned session and reads rows by item
-- id, so a difference would only cost candidates, never mislabel them):
--   co-occurrence sources: the session's distinct items newest first (cart-only items after),
--     cart items moved to the front, the first `cooc_window`;
--   sequence sources: the first `seq_sources` of the same distinct order;
--   session-kNN (V-SKNN, Ludewig & Jannach 2018): the first `sknn_items` distinct recent
--     items, weighted (n - age) / n; the `sample` most recent past sessions sharing one are
--     compared by cosine similarity and the `sknn_k` most similar vote for their items.
--     The client orders the votes (storage/redis_store.py).
--   profile (returning users): only for a session with fewer than `profile_below` distinct
--     items, so the hot path grows for nobody else; the user named by the request, else the
--     session's stored one: the top `profile_n` items of their profile, and the
--     co-occurrence lists of the first `profile_sources` of them.
-- ARGV 1: static JSON {session, item, user, pop, per_source, per_item, sample, sknn_k,
--         catpop, catalog_log, profile_below}
--         (session/item/user: the pieces that wrap an id into a key, from storage/keys.py)
-- ARGV 2: session id; ARGV 3: JSON [n_popular, cooc_window, seq_sources, sknn_items, trending,
--         user id ('' = the session's own), profile_n (0: no profile), profile_sources]
-- Returns {recent, cart, bought, info, popular, {item, row, ...} co, {item, row, ...} next,
--          votes {item, billionths, ...} unordered, trending {item, score, ...} in the category of
--          the latest item with one,
--          the catalogue log's last id or '', profile {item, score, ...} ({} if not read),
--          {item, row, ...} co-occurrence of the profile's first items}.
-- Scores are sent as text (Lua numbers would reach the client truncated to integers).
local cfg = cjson.decode(ARGV[1])
local sid = ARGV[2]
local ask = cjson.decode(ARGV[3])
local n_popular, cooc_window, seq_sources, sknn_items, trending =
  ask[1], ask[2], ask[3], ask[4], ask[5]
local asked_user, profile_n, profile_sources = ask[6] or '', ask[7] or 0, ask[8] or 0

local function skey(name) return cfg.session[1] .. sid .. cfg.session[2] .. name end
local function ikey(item, name) return cfg.item[1] .. item .. cfg.item[2] .. name end
local function top(key, n) return redis.call('ZREVRANGE', key, 0, n - 1, 'WITHSCORES') end

local recent = redis.call('LRANGE', skey('recent'), 0, -1)
local cart = redis.call('HGETALL', skey('cart'))
local bought = redis.call('SMEMBERS', skey('bought'))
local info = redis.call('HGETALL', skey('info'))

-- Distinct items newest first, each with its V-SKNN weight; cart-only items after them.
local order, seen, weight = {}, {}, {}
local n = #recent
for age, raw in ipairs(recent) do
  local item = string.sub(raw, 1, string.find(raw, '\31', 1, true) - 1)
  if not seen[item] then
    seen[item] = true
    order[#order + 1] = item
    weight[item] = (n - age + 1) / n
  end
end
local distinct_recent = #order
local in_cart = {}
for i = 1, #cart, 2 do
  in_cart[cart[i]] = true
  if not seen[cart[i]] then
    seen[cart[i]] = true
    order[#order + 1] = cart[i]
  end
end

local co = {}
local sources = {}
for _, item in ipairs(order) do if in_cart[item] then sources[#sources + 1] = item end end
for _, item in ipairs(order) do if not in_cart[item] then sources[#sources + 1] = item end end
for i = 1, math.min(#sources, cooc_window) do
  co[#co + 1] = sources[i]
  co[#co + 1] = top(ikey(sources[i], 'co'), cfg.per_source)
end
local nxt = {}
for i = 1, math.min(#order, seq_sources) do
  nxt[#nxt + 1] = order[i]
  nxt[#nxt + 1] = top(ikey(order[i], 'next'), cfg.per_source)
end
-- Trending: within the category of the latest session item that has one (3 looked at).
local trend = {}
if trending == 1 then
  for i = 1, math.min(#order, 3) do
    local category = redis.call('HGET', ikey(order[i], 'meta'), 'category')
    if category and category ~= '' then
      trend = top(cfg.catpop .. category, cfg.per_source)
      break
    end
  end
end

-- Session-kNN.
local votes = {}
local dot, last, norm = {}, {}, 0
for i = 1, math.min(distinct_recent, sknn_items) do
  local item = order[i]
  local w = weight[item]
  norm = norm + w * w
  local row = top(ikey(item, 'sessions'), cfg.per_item)
  for j = 1, #row, 2 do
    local other, ts = row[j], tonumber(row[j + 1])
    if other ~= sid then
      dot[other] = (dot[other] or 0) + w
      if ts > (last[other] or -1) then last[other] = ts end
    end
  end
end
if norm > 0 then
  norm = math.sqrt(norm)
  local sids = {}
  for other in pairs(dot) do sids[#sids + 1] = other end
  if #sids > cfg.sample then
    -- The most recent sessions (ties by id, so every call agrees). Only the times are sorted,
    -- by plain comparison: a Lua comparator called per pair cost more than the rest of kNN.
    local times = {}
    for i, other in ipairs(sids) do times[i] = last[other] end
    table.sort(times)
    local cut = times[#times - cfg.sample + 1]
    local newer, ties = {}, {}
    for _, other in ipairs(sids) do
      if last[other] > cut then newer[#newer + 1] = other
      elseif last[other] == cut then ties[#ties + 1] = other end
    end
    table.sort(ties)
    for i = 1, cfg.sample - #newer do newer[#newer + 1] = ties[i] end
    sids = newer
  end
  local sims = {}
  for i = 1, #sids do
    local items = redis.call('SMEMBERS', cfg.session[1] .. sids[i] .. cfg.session[2] .. 'items')
    if #items > 0 then
      sims[#sims + 1] = {dot[sids[i]] / (math.sqrt(#items) * norm), sids[i], items}
    end
  end
  table.sort(sims, function(a, b)
    if a[1] ~= b[1] then return a[1] > b[1] end
    return a[2] < b[2]
  end)
  local score, voted = {}, {}
  for i = 1, math.min(#sims, cfg.sknn_k) do
    for _, item in ipairs(sims[i][3]) do
      if score[item] == nil then
        voted[#voted + 1] = item
        score[item] = 0
      end
      score[item] = score[item] + sims[i][1]
    end
  end
  -- Unsorted, as integers (billionths): the client sorts, and neither costs a Lua callback
  -- per comparison nor a float formatted as text per vote.
  for _, item in ipairs(voted) do
    votes[#votes + 1] = item
    votes[#votes + 1] = math.floor(score[item] * 1e9 + 0.5)
  end
end

-- A returning user's profile, for a short session only.
local profile, pco = {}, {}
if profile_n > 0 and distinct_recent < cfg.profile_below then
  local uid = asked_user
  if uid == '' then
    for i = 1, #info, 2 do
      if info[i] == 'user_id' then uid = info[i + 1] end
    end
  end
  if uid ~= '' then
    profile = top(cfg.user[1] .. uid .. cfg.user[2] .. 'profile', profile_n)
    for i = 1, math.min(#profile / 2, profile_sources) do
      pco[#pco + 1] = profile[2 * i - 1]
      pco[#pco + 1] = top(ikey(profile[2 * i - 1], 'co'), cfg.per_source)
    end
  end
end

-- The catalogue log's position: the client serves metadata from its cache if that is as new.
local latest = redis.call('XREVRANGE', cfg.catalog_log, '+', '-', 'COUNT', 1)
local catalog_at = latest[1] and latest[1][1] or ''

return {recent, cart, bought, info, top(cfg.pop, n_popular), co, nxt, votes, trend, catalog_at,
  profile, pco}
