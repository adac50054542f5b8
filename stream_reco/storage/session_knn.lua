#!lua flags=no-writes
-- Session-kNN in one read-only call (V-SKNN, Ludewig & Jannach 2018): the current session's
-- items, each with its weight, find the recent past sessions that shared them; the `sample`
-- most recent of those are compared by cosine similarity, and the `k` most similar vote for
-- their items. Done here rather than in the client because a request would otherwise move
-- thousands of session ids over the wire twice (measured: 10+ ms of client time per request).
-- ARGV: item key prefix, item key suffix (to `sessions`), session key prefix, session key
--       suffix (to `items`), own session id, sessions read per item, sample, k, items returned,
--       then item id, weight pairs (the weights of every session item, for the norm).
-- Returns {item, score-as-text, ...} best first; scores are text because Lua numbers would
-- reach the client truncated to integers.
local ipre, isuf, spre, ssuf, own = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local per_item, sample, k, limit = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]),
  tonumber(ARGV[9])

local dot, last, norm = {}, {}, 0
for i = 10, #ARGV, 2 do
  local item, w = ARGV[i], tonumber(ARGV[i + 1])
  norm = norm + w * w
  local row = redis.call('ZREVRANGE', ipre .. item .. isuf, 0, per_item - 1, 'WITHSCORES')
  for j = 1, #row, 2 do
    local sid, ts = row[j], tonumber(row[j + 1])
    if sid ~= own then
      dot[sid] = (dot[sid] or 0) + w
      if ts > (last[sid] or -1) then
        last[sid] = ts
      end
    end
  end
end
if norm == 0 then
  return {}
end
norm = math.sqrt(norm)

local sids = {}
for sid in pairs(dot) do
  sids[#sids + 1] = sid
end
-- The most recent sessions first (ties by id, so every call agrees).
table.sort(sids, function(a, b)
  if last[a] ~= last[b] then return last[a] > last[b] end
  return a < b
end)

local sims = {}
for n = 1, math.min(#sids, sample) do
  local sid = sids[n]
  local items = redis.call('SMEMBERS', spre .. sid .. ssuf)
  if #items > 0 then
    sims[#sims + 1] = {dot[sid] / (math.sqrt(#items) * norm), sid, items}
  end
end
table.sort(sims, function(a, b)
  if a[1] ~= b[1] then return a[1] > b[1] end
  return a[2] < b[2]
end)

local votes, order = {}, {}
for n = 1, math.min(#sims, k) do
  local sim, items = sims[n][1], sims[n][3]
  for _, item in ipairs(items) do
    if votes[item] == nil then
      order[#order + 1] = item
      votes[item] = 0
    end
    votes[item] = votes[item] + sim
  end
end
table.sort(order, function(a, b)
  if votes[a] ~= votes[b] then return votes[a] > votes[b] end
  return a < b
end)
local out = {}
for n = 1, math.min(#order, limit) do
  out[#out + 1] = order[n]
  out[#out + 1] = string.format('%.17g', votes[order[n]])
end
return out
