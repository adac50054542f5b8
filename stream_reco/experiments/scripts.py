"""The Lua of experiment counters: each script touches one experiment's keys only, all in one
hash tag, so it is one atomic step on a single Redis and on a Redis Cluster alike.

A session's record (a plain JSON string, TTL like a session's) holds what attribution needs:
`s` the shown lists [{r: recommendation id, t: event time, v: variant, i: items}], newest
last; `vs` the variants that counted the session; `rev` its revenue per variant; `f` which
per-session flags are set (variant .. ":click" etc.); `off` per Kafka partition the last
offset applied; `ids` the session's recent event ids (bounded)."""

from __future__ import annotations

# KEYS[1] the session's record, KEYS[2] the served variant's counters.
# ARGV: config JSON {ttl, max_shown, max_items}, variant, recommendation id, event time (ms),
# items JSON. Counts the session once per variant, the answer once (if it shows anything; a
# retry of a call that ran finds its recommendation id and changes nothing).
IMPRESSION = """
local cfg = cjson.decode(ARGV[1])
local variant, rid, ts = ARGV[2], ARGV[3], tonumber(ARGV[4])
local items = cjson.decode(ARGV[5])
local raw = redis.call('GET', KEYS[1])
local rec = {s = {}, vs = {}, rev = {}, f = {}, off = {}, ids = {}}
if raw then rec = cjson.decode(raw) end
if not rec.vs[variant] then
  rec.vs[variant] = 1
  redis.call('HINCRBY', KEYS[2], 'sessions', 1)
end
for _, s in ipairs(rec.s) do
  if s.r == rid then return 0 end  -- a retried call that had run: counted once
end
if #items > 0 then
  local kept = {}
  for n = 1, math.min(#items, cfg.max_items) do kept[n] = items[n] end
  table.insert(rec.s, {r = rid, t = ts, v = variant, i = kept})
  while #rec.s > cfg.max_shown do table.remove(rec.s, 1) end
  redis.call('HINCRBY', KEYS[2], 'impressions', 1)
end
redis.call('SET', KEYS[1], cjson.encode(rec), 'EX', cfg.ttl)
return 1
"""

# KEYS: the batch's session records (1..n), then every variant's counters in cfg.variants
# order. ARGV[1] config JSON {window_ms, slack_ms, max_ids, variants}; ARGV[2] the events, rows
# [record index, type, item, recommendation id or "", event time, revenue, event id,
# partition marker or "", offset]. A redelivered event (offset at or below its partition's
# last in the record) or a re-sent one (an id the record holds) changes nothing; so does an
# event of a session never shown this experiment's answers. Returns how many it attributed.
ATTRIBUTE = """
local cfg = cjson.decode(ARGV[1])
local rows = cjson.decode(ARGV[2])
local vkey = {}
for n, name in ipairs(cfg.variants) do vkey[name] = KEYS[#KEYS - #cfg.variants + n] end
local recs, dirty = {}, {}
local counted = 0
local function record(n)
  if recs[n] == nil then
    local raw = redis.call('GET', KEYS[n])
    recs[n] = raw and cjson.decode(raw) or false
  end
  return recs[n]
end
local function has(list, x)
  for _, y in ipairs(list) do if y == x then return true end end
  return false
end
local function seen(rec, marker, offset, eid)
  if marker ~= '' then
    local last = rec.off[marker]
    if last ~= nil and offset <= last then return true end
    rec.off[marker] = offset
  end
  -- By id too: the same event sent again (a new offset) or replayed without a position.
  if has(rec.ids, eid) then return true end
  table.insert(rec.ids, eid)
  while #rec.ids > cfg.max_ids do table.remove(rec.ids, 1) end
  return false
end
local function shown(rec, rid, item, ts)
  if rid ~= '' then
    for _, s in ipairs(rec.s) do if s.r == rid then return s end end
  end
  for n = #rec.s, 1, -1 do
    local s = rec.s[n]
    if ts + cfg.slack_ms >= s.t and ts - s.t <= cfg.window_ms and has(s.i, item) then return s end
  end
  return nil
end
local function flag(rec, key, v, name)
  local f = v .. ':' .. name
  if not rec.f[f] then
    rec.f[f] = 1
    redis.call('HINCRBY', key, name .. '_sessions', 1)
  end
end
local names = {click = 'clicks', add_to_cart = 'carts', purchase = 'purchases'}
local flags = {click = 'click', add_to_cart = 'cart', purchase = 'purchase'}
for _, row in ipairs(rows) do
  local n, kind, item, rid, ts = row[1], row[2], row[3], row[4], row[5]
  local rec = record(n)
  if rec and not seen(rec, row[8], row[9], row[7]) then
    dirty[n] = true
    local s = names[kind] and shown(rec, rid, item, ts)
    local key = s and vkey[s.v]
    if key then
      counted = counted + 1
      redis.call('HINCRBY', key, names[kind], 1)
      flag(rec, key, s.v, flags[kind])
      if kind == 'purchase' and row[6] > 0 then
        local was = rec.rev[s.v] or 0
        rec.rev[s.v] = was + row[6]
        redis.call('HINCRBYFLOAT', key, 'revenue', row[6])
        -- The sum of squared session revenues grows by (was + x)^2 - was^2.
        redis.call('HINCRBYFLOAT', key, 'revenue2', 2 * was * row[6] + row[6] * row[6])
      end
    end
  end
end
for n, _ in pairs(dirty) do
  redis.call('SET', KEYS[n], cjson.encode(recs[n]), 'KEEPTTL')
end
return counted
"""
