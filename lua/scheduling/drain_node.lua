-- drain_node: the node's replica is draining; no placement may pick the node any more, while
-- the jobs it runs finish on its open socket (their results still complete them).
--
-- INVARIANT: only the current generation can drain a node. Afterwards the node is in no pool
-- (no node_slots entry, not in node_free), so no dispatch, failover or slot hand-off selects
-- it; its record, liveness, running count and active jobs stay. A heartbeat of this
-- generation does not bring it back into the pools; its next registration (a new connection,
-- elsewhere) does.
-- Hash tag: every key is {prefix}:{domain}:<name> (one slot).
--
-- KEYS[1] nodes         HASH node -> json record {gen, digest, max, hardware, ...}
-- KEYS[2] node_langs    HASH node -> json {asr, semantic, tts}
-- KEYS[3] node_slots    HASH node -> max slots, while the node is in the pools
-- KEYS[4] node_free     SET  nodes of the pools with a free slot
-- KEYS[5] pools         ZSET lex "<src>:<tgt>\0<node>"
-- KEYS[6] node_running  HASH node -> running slots
--
-- ARGV[1] node id
-- ARGV[2] generation
--
-- Reply: {0 OK, {running}} the node's running count (its jobs still to answer)
--        {-1 NOT_REGISTERED} no record for the node
--        {-2 STALE_GENERATION} a newer connection owns the node: nothing changed
-- Replay: a second call changes nothing and answers the running count again.

--@include "includes/pools.lua"
--@include "includes/scheduling_codes.lua"

local K = {nodes = KEYS[1], node_langs = KEYS[2], node_slots = KEYS[3], node_free = KEYS[4],
  pools = KEYS[5], node_running = KEYS[6]}
local node = ARGV[1]
local gen = tonumber(ARGV[2])

local rec = read_node(K, node)
if not rec then
  return reply(CODE.NOT_REGISTERED)
end
if rec.gen ~= gen then
  return reply(CODE.STALE_GENERATION)
end
if not rec.draining then
  leave_pools(K, node, read_langs(K, node))
  rec.draining = true
  write_node(K, node, rec)
end
return reply(CODE.OK, {running = read_running(K, node)})
