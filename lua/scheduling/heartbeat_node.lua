-- heartbeat_node: a registered node is alive; optionally its languages or slots changed.
--
-- INVARIANT: liveness is refreshed only for the current generation. A change of languages or
-- slots moves the node between pools atomically (leave every old member, join every new one).
-- A node dropped from the pools as dead (liveness lapsed, not yet swept) rejoins them here.
-- Hash tag: every key is {prefix}:{domain}:<name> (one slot).
--
-- KEYS[1] nodes         HASH node -> json record
-- KEYS[2] node_running  HASH node -> running slots
-- KEYS[3] node_alive    ZSET node -> alive until (ms)
-- KEYS[4] pools         ZSET lex "<src>:<tgt>\0<load>\0<node>"
--
-- ARGV[1] node id
-- ARGV[2] generation (from register_node)
-- ARGV[3] now (ms) or ""
-- ARGV[4] node_ttl_ms
-- ARGV[5] capabilities json (as register_node) or "" when unchanged
-- ARGV[6] reported load json (the node's resource_usage, stored for operators) or ""
--
-- Reply: {0 OK, {gen, moved, alive_until_ms}}
--        {-1 NOT_REGISTERED} no record for the node (offline or never registered): re-register
--        {-2 STALE_GENERATION} the record belongs to a newer connection; nothing changed
-- Replay: idempotent apart from last_hb_ms / alive_until_ms moving forward.

--@include "includes/scheduling_codes.lua"
--@include "includes/pools.lua"

local K = {nodes = KEYS[1], node_running = KEYS[2], node_alive = KEYS[3], pools = KEYS[4]}
local node = ARGV[1]
local gen = tonumber(ARGV[2])
local now = now_from(ARGV[3])
local ttl_ms = tonumber(ARGV[4])

local rec = read_node(K, node)
if not rec then
  return reply(CODE.NOT_REGISTERED)
end
if rec.gen ~= gen then
  return reply(CODE.STALE_GENERATION)
end

local running = read_running(K, node)
local moved = false
if ARGV[5] ~= '' then
  local caps = cjson.decode(ARGV[5])
  local pair_list = pairs_of(caps)
  local old_pairs = set_of(rec.pairs)
  local changed = #pair_list ~= #(rec.pairs or {}) or caps.max ~= rec.max
  for _, p in ipairs(pair_list) do
    if not old_pairs[p] then
      changed = true
    end
  end
  if changed then
    leave_pools(K, node, rec, running)
    rec.pairs = pair_list
    rec.max = caps.max
    moved = true
  end
  rec.asr, rec.semantic, rec.tts = caps.asr, caps.semantic, caps.tts
  if caps.hardware ~= nil then
    rec.hardware = caps.hardware
  end
end
if not rec.in_pools then
  join_pools(K, node, rec, running)
  moved = true
end
if ARGV[6] ~= '' then
  rec.reported_load = cjson.decode(ARGV[6])
end
rec.last_hb_ms = now
write_node(K, node, rec)
rcall('ZADD', K.node_alive, now + ttl_ms, node)
return reply(CODE.OK, {gen = gen, moved = moved, alive_until_ms = now + ttl_ms})
