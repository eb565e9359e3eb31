-- heartbeat_node: a registered node is alive; optionally its languages or slots changed.
--
-- INVARIANT: liveness is refreshed only for the current generation. A change of languages moves
-- the node between pools atomically (leave every old member, join every new one); a change of
-- slots rewrites its node_slots entry. A heartbeat whose capabilities digest equals the stored
-- one changes no pool and costs O(1), whatever the pairs. A node dropped from the pools as dead
-- (liveness lapsed, not yet swept) rejoins them here; a draining one (drain_node.lua) does not.
-- Hash tag: every key is {prefix}:{domain}:<name> (one slot).
--
-- KEYS[1] nodes         HASH node -> json record {gen, digest, max, hardware, ...}
-- KEYS[2] node_langs    HASH node -> json {asr, semantic, tts}
-- KEYS[3] node_slots    HASH node -> max slots, while the node is in the pools
-- KEYS[4] node_free     SET  nodes of the pools with a free slot
-- KEYS[5] node_alive    ZSET node -> alive until (ms)
-- KEYS[6] pools         ZSET lex "<src>:<tgt>\0<node>"
-- KEYS[7] node_running  HASH node -> running slots
--
-- ARGV[1] node id
-- ARGV[2] generation (from register_node)
-- ARGV[3] now (ms) or ""
-- ARGV[4] node_ttl_ms
-- ARGV[5] capabilities json (as register_node) or "" when unchanged
-- ARGV[6] capabilities digest (as register_node) or "" when unchanged
-- ARGV[7] reported load json (the node's resource_usage, stored for operators) or ""
--
-- Reply: {0 OK, {gen, moved, alive_until_ms}}
--        {-1 NOT_REGISTERED} no record for the node (offline or never registered): re-register
--        {-2 STALE_GENERATION} the record belongs to a newer connection; nothing changed
-- Replay: idempotent apart from last_hb_ms / alive_until_ms moving forward.

--@include "includes/pools.lua"
--@include "includes/scheduling_codes.lua"

local K = {nodes = KEYS[1], node_langs = KEYS[2], node_slots = KEYS[3], node_free = KEYS[4],
  node_alive = KEYS[5], pools = KEYS[6], node_running = KEYS[7]}
local node = ARGV[1]
local gen = tonumber(ARGV[2])
local now = now_from(ARGV[3])
local ttl_ms = tonumber(ARGV[4])

local function same_set(a, b)
  local seen = set_of(a)
  local count = 0
  for _ in pairs(seen) do
    count = count + 1
  end
  for _, v in ipairs(b or {}) do
    if not seen[v] then
      return false
    end
  end
  return count == #(b or {})
end

local rec = read_node(K, node)
if not rec then
  return reply(CODE.NOT_REGISTERED)
end
if rec.gen ~= gen then
  return reply(CODE.STALE_GENERATION)
end

local moved = false
local joined = in_pools(K, node)
if ARGV[5] ~= '' and ARGV[6] ~= rec.digest then
  local caps = cjson.decode(ARGV[5])
  local langs = read_langs(K, node)
  if not same_set(langs.asr, caps.asr) or not same_set(langs.semantic, caps.semantic) then
    -- also when lapsed: the leftovers of the old pairs must go with them
    leave_pools(K, node, langs)
    joined = false
    langs.asr, langs.semantic = caps.asr, caps.semantic
    moved = true
  end
  langs.tts = caps.tts
  write_langs(K, node, langs)
  if caps.max ~= rec.max then
    rec.max = caps.max
    if joined then
      rcall('HSET', K.node_slots, node, rec.max)
      mark_free(K, node, read_running(K, node), rec.max)
    end
    moved = true
  end
  if caps.hardware ~= nil then
    rec.hardware = caps.hardware
  end
  rec.digest = ARGV[6]
end
if not joined and not rec.draining then
  join_pools(K, node, read_langs(K, node), rec.max)
  moved = true
end
if ARGV[7] ~= '' then
  rec.reported_load = cjson.decode(ARGV[7])
end
rec.last_hb_ms = now
write_node(K, node, rec)
rcall('ZADD', K.node_alive, now + ttl_ms, node)
return reply(CODE.OK, {gen = gen, moved = moved, alive_until_ms = now + ttl_ms})
