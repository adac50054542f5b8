"""The Lua of experiment counters: each script touches one experiment's keys only, all in one
hash tag, so it is one atomic step on a single Redis and on a Redis Cluster alike.

A session's record (a plain JSON string, TTL like a session's) holds what attribution needs:
`s` the shown lists [{r: recommendation id, t: event time (-1: unknown yet), v: variant,
i: items, c: clicked}], newest last; `vs` the variants that counted the session; `rev` its
attributed revenue and `srev` all its revenue, per variant; `f` which per-session flags are set
(variant .. ":click" etc.); `off` per Kafka partition the last offset applied; `ids` the
session's recent event ids (bounded). A field a record lacks (an older record) starts empty.

Redis does not roll a script back when it fails halfway, so ATTRIBUTE reads and computes
everything first and writes (counters, then records) only at the end: a failure before the
writes leaves no count without the record that would deduplicate it."""

from __future__ import annotations

# Shared by both scripts: an older record (or a field that is not a table) starts empty.
_FILL = """
local function fill(rec)
  for _, name in ipairs({'s', 'vs', 'rev', 'srev', 'f', 'off', 'ids'}) do
    if type(rec[name]) ~= 'table' then rec[name] = {} end
  end
  return rec
end
"""

# KEYS[1] the session's record, KEYS[2] the served variant's counters, KEYS[3] the session's
# tombstone in this experiment (privacy.py's forget): while it lives, nothing is written.
# ARGV: config JSON {ttl, max_shown, max_items}, variant, recommendation id, event time (ms; -1:
# unknown, the session's next event gives it), items JSON. Counts the session once per variant,
# the answer once (if it shows anything; a retry of a call that ran, or a redelivered request
# answered again under the same recommendation id, finds it and changes nothing).
IMPRESSION = (
    _FILL
    + """
local cfg = cjson.decode(ARGV[1])
local variant, rid, ts = ARGV[2], ARGV[3], tonumber(ARGV[4])
local items = cjson.decode(ARGV[5])
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end  -- an answer computed before a forget
local raw = redis.call('GET', KEYS[1])
local rec = fill(raw and cjson.decode(raw) or {})
for _, s in ipairs(rec.s) do
  if s.r == rid then return 0 end  -- this answer was counted
end
if not rec.vs[variant] then
  rec.vs[variant] = 1
  redis.call('HINCRBY', KEYS[2], 'sessions', 1)
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
)

# KEYS: the batch's session records (1..n), then every variant's counters in cfg.variants
# order. ARGV[1] config JSON {window_ms, max_ids, variants}; ARGV[2] the clicks, cart additions
# and purchases, rows [record index, type, item, recommendation id or "", event time, revenue,
# event id, partition marker or "", offset]; ARGV[3] per record index the session's first
# event of the batch [event time, marker or "", offset]: it dates the session's answers whose
# time was unknown. A redelivered event (offset at or below its partition's last in the record)
# or a re-sent one (an id the record holds) changes nothing; so does an event of a session never
# shown this experiment's answers. A click counts only for the answer its recommendation id
# names (and that answer once in `clicked_impressions`); a cart addition or purchase for the
# answer it names, else the newest answer showing its item in the window from the answer's
# time on; besides, every cart addition and purchase of an exposed session counts under each
# arm that served the session (`session_*`: what a holdout is compared on). Returns how many
# events it attributed to an answer.
ATTRIBUTE = (
    _FILL
    + """
local cfg = cjson.decode(ARGV[1])
local rows = cjson.decode(ARGV[2])
local firsts = cjson.decode(ARGV[3])
local vkey = {}
for n, name in ipairs(cfg.variants) do vkey[name] = KEYS[#KEYS - #cfg.variants + n] end
local recs, dirty, incr, order = {}, {}, {}, {}
local counted = 0
local function record(n)
  if recs[n] == nil then
    local raw = redis.call('GET', KEYS[n])
    recs[n] = raw and fill(cjson.decode(raw)) or false
  end
  return recs[n]
end
local function add(key, name, x)
  if incr[key] == nil then incr[key] = {}; table.insert(order, key) end
  incr[key][name] = (incr[key][name] or 0) + x
end
local function has(list, x)
  for _, y in ipairs(list) do if y == x then return true end end
  return false
end
local function old(rec, marker, offset)
  local last = marker ~= '' and rec.off[marker] or nil
  return last ~= nil and offset <= last
end
local function seen(rec, marker, offset, eid)
  if old(rec, marker, offset) then return true end
  if marker ~= '' then rec.off[marker] = offset end
  -- By id too: the same event sent again (a new offset) or replayed without a position.
  if has(rec.ids, eid) then return true end
  table.insert(rec.ids, eid)
  while #rec.ids > cfg.max_ids do table.remove(rec.ids, 1) end
  return false
end
local function named(rec, rid)
  if rid == '' then return nil end
  for _, s in ipairs(rec.s) do if s.r == rid then return s end end
  return nil
end
local function by_item(rec, item, ts)
  for n = #rec.s, 1, -1 do
    local s = rec.s[n]
    if s.t >= 0 and ts >= s.t and ts - s.t <= cfg.window_ms and has(s.i, item) then return s end
  end
  return nil
end
local function flag(rec, v, name)
  local f = v .. ':' .. name
  if not rec.f[f] then
    rec.f[f] = 1
    add(vkey[v], name .. '_sessions', 1)
  end
end
local function revenue(spent, v, x, prefix)
  local was = spent[v] or 0
  spent[v] = was + x
  add(vkey[v], prefix .. 'revenue', x)
  -- The sum of squared session revenues grows by (was + x)^2 - was^2.
  add(vkey[v], prefix .. 'revenue2', 2 * was * x + x * x)
end
-- An answer of unknown time (a holdout's, a fallback's) is dated by the session's next event.
for n, first in ipairs(firsts) do
  local rec = record(n)
  if rec and not old(rec, first[2], first[3]) then
    for _, s in ipairs(rec.s) do
      if s.t < 0 then s.t = first[1]; dirty[n] = true end
    end
  end
end
local names = {add_to_cart = 'carts', purchase = 'purchases'}
local flags = {add_to_cart = 'cart', purchase = 'purchase'}
for _, row in ipairs(rows) do
  local n, kind, item, rid, ts, value = row[1], row[2], row[3], row[4], row[5], row[6]
  local rec = record(n)
  if rec and not seen(rec, row[8], row[9], row[7]) then
    dirty[n] = true
    if kind == 'click' then
      local s = named(rec, rid)
      if s and vkey[s.v] then
        counted = counted + 1
        add(vkey[s.v], 'clicks', 1)
        flag(rec, s.v, 'click')
        if not s.c then s.c = 1; add(vkey[s.v], 'clicked_impressions', 1) end
      end
    elseif names[kind] then
      local s = named(rec, rid) or by_item(rec, item, ts)
      if s and vkey[s.v] then
        counted = counted + 1
        add(vkey[s.v], names[kind], 1)
        flag(rec, s.v, flags[kind])
        if kind == 'purchase' and value > 0 then revenue(rec.rev, s.v, value, '') end
      end
      for v, _ in pairs(rec.vs) do
        if vkey[v] then
          add(vkey[v], 'session_' .. names[kind], 1)
          flag(rec, v, 'session_' .. flags[kind])
          if kind == 'purchase' and value > 0 then revenue(rec.srev, v, value, 'session_') end
        end
      end
    end
  end
end
for _, key in ipairs(order) do
  for name, x in pairs(incr[key]) do
    if string.find(name, 'revenue', 1, true) then
      redis.call('HINCRBYFLOAT', key, name, string.format('%.17g', x))
    else
      redis.call('HINCRBY', key, name, x)
    end
  end
end
for n, _ in pairs(dirty) do
  redis.call('SET', KEYS[n], cjson.encode(recs[n]), 'KEEPTTL')
end
return counted
"""
)
