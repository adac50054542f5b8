-- One user's part of a batch (storage/profiles.py): the sessions that joined the user's profile
-- and the items they add, exactly once. Every key is the user's ({uid}): one slot, so this is
-- one atomic step on a single Redis and on a Redis Cluster alike. Shared parts (common.lua's
-- capped_add) come before it.
-- KEYS: the user's profile (item -> log2 decayed score, decay.py), sessions (session id ->
--       latest event time) and marks (per Kafka partition `o:<marker>` the last offset
--       counted, `ids` the last `max_ids` event ids counted, JSON), then the user's tombstone
--       (a forget's, storage/forget.py): while it lives the user is skipped, so a redelivered
--       batch does not write a forgotten user back.
-- ARGV 1: static config JSON {max_items, max_sessions, max_ids, ttl}.
-- ARGV 2: the batch's sessions of this user, JSON [[session id, history], ...]; history:
--         false when not read, true when the session joined this user before (its `info`
--         says so: it left `sessions` past the bound and comes back), else the session's
--         stored interactions [[item, log2 weight or null, ts], ...] as read after the batch
--         was applied.
-- ARGV 3: the batch's events of this user in batch order (each partition's in offset order),
--         JSON [[session index, event id, marker ('' = none), offset (text), item,
--         log2 weight or null, ts], ...]: every event, redeliveries too.
-- A session joins once: a call that finds a session outside `sessions` without its history
-- writes nothing and returns the session's index (the caller reads the history and calls
-- again); with its history, the session's history is added (it already holds this batch's
-- events, so those are only marked); after that each new event adds itself. An event at or
-- below its partition's last counted offset, or whose id is among the last counted, changes
-- nothing: a redelivered batch leaves the profile as it was.
-- Returns {interactions added, indexes of the sessions whose history is needed, indexes of
-- the sessions joined before that this call saw redelivered events of (the caller marks their
-- `info` again: a crash may have come between a join and its mark)}.
if redis.call('EXISTS', KEYS[4]) == 1 then return {0, {}, {}} end
local sessions = cjson.decode(ARGV[2])
local rows = cjson.decode(ARGV[3])
local profile, joined_key, marks = KEYS[1], KEYS[2], KEYS[3]
local added = 0

local raw_ids = redis.call('HGET', marks, 'ids')
local ids = raw_ids and cjson.decode(raw_ids) or {}
local known = {}
for _, id in ipairs(ids) do known[id] = true end
local last, moved = {}, {}

local function seen(eid, marker, offset_text)
  if marker ~= '' then
    local at = last[marker]
    if at == nil then
      at = tonumber(redis.call('HGET', marks, 'o:' .. marker) or '-1')
    end
    if tonumber(offset_text) <= at then
      last[marker] = at
      return true
    end
    last[marker], moved[marker] = tonumber(offset_text), offset_text
  end
  -- By id too: an event re-sent (a new offset) or replayed without a position.
  if known[eid] then return true end
  known[eid] = true
  ids[#ids + 1] = eid
  return false
end

local function add(item, log_w)
  if log_w ~= cjson.null then
    capped_add(profile, log_w, item, cfg.max_items, nil)
    added = added + 1
  end
end

-- Sessions: which join now (with their history), and each one's latest event time.
local joining, newest, needed, before = {}, {}, {}, {}
for n, s in ipairs(sessions) do
  newest[n] = -1
  before[n] = redis.call('ZSCORE', joined_key, s[1]) ~= false
  if not before[n] then
    if s[2] == false then
      needed[#needed + 1] = n
    elseif type(s[2]) == 'table' then
      joining[n] = s[2]
    end
  end
end
if #needed > 0 then return {0, needed, {}} end
for n, _ in ipairs(sessions) do
  for _, h in ipairs(joining[n] or {}) do
    add(h[1], h[2])
    if h[3] > newest[n] then newest[n] = h[3] end
  end
end

local remark, marked = {}, {}
for _, r in ipairs(rows) do
  local n = r[1]
  if not seen(r[2], r[3], r[4]) then
    if not joining[n] then add(r[5], r[6]) end
    if r[7] > newest[n] then newest[n] = r[7] end
  elseif before[n] and not marked[n] then
    marked[n] = true
    remark[#remark + 1] = n
  end
end

for n, s in ipairs(sessions) do
  if newest[n] >= 0 then
    redis.call('ZADD', joined_key, 'GT', string.format('%.17g', newest[n]), s[1])
  end
end
-- Bounded: the oldest sessions leave (forget's scan finds them while they live). One that
-- comes back is known by its `info` (history true above): it joins again without its history.
local count = redis.call('ZCARD', joined_key)
if count > cfg.max_sessions then
  redis.call('ZREMRANGEBYRANK', joined_key, 0, count - cfg.max_sessions - 1)
end
while #ids > cfg.max_ids do table.remove(ids, 1) end
local fields = {'ids', cjson.encode(ids)}
for marker, offset_text in pairs(moved) do
  fields[#fields + 1] = 'o:' .. marker
  fields[#fields + 1] = offset_text
end
redis.call('HSET', marks, unpack(fields))
for _, k in ipairs({profile, joined_key, marks}) do
  redis.call('EXPIRE', k, cfg.ttl)
end
return {added, {}, remark}
