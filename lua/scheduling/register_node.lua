-- register_node: a node connected and announced its capabilities; it gets a new generation.
--
-- INVARIANT: one record per node id; the newest registration wins. Its generation (from a
-- domain-wide counter, so never reused even after the record is gone) fences heartbeats and
-- offline calls: a stale connection's clean-up can never remove a newer registration.
-- The node joins the pool of every directed pair asr x semantic (identity pairs included):
-- O(pairs), here and on a capability change only. Re-registering a live id keeps its running
-- count and active jobs (they finish or time out).
-- Hash tag: every key is {prefix}:{domain}:<name> (one slot).
--
-- KEYS[1] nodes         HASH node -> json record {gen, digest, max, hardware, ...}
-- KEYS[2] node_langs    HASH node -> json {asr, semantic, tts}
-- KEYS[3] node_slots    HASH node -> max slots, while the node is in the pools
-- KEYS[4] node_free     SET  nodes of the pools with a free slot
-- KEYS[5] node_running  HASH node -> running slots
-- KEYS[6] node_alive    ZSET node -> alive until (ms)
-- KEYS[7] pools         ZSET lex "<src>:<tgt>\0<node>"
-- KEYS[8] gen_seq       STRING generation counter
--
-- ARGV[1] node id (validated by the caller)
-- ARGV[2] capabilities json {asr=[...], semantic=[...], tts=[...], max=<slots>, hardware={...}}
-- ARGV[3] capabilities digest (equal digests: equal capabilities, whatever the list order)
-- ARGV[4] now (ms) or "" for server time
-- ARGV[5] node_ttl_ms
--
-- Reply: {0 OK, {gen, alive_until_ms}}
-- Replay: a repeated call is a new registration (new generation); nothing else differs.

--@include "includes/pools.lua"
--@include "includes/scheduling_codes.lua"

local K = {nodes = KEYS[1], node_langs = KEYS[2], node_slots = KEYS[3], node_free = KEYS[4],
  node_running = KEYS[5], node_alive = KEYS[6], pools = KEYS[7], gen_seq = KEYS[8]}
local node = ARGV[1]
local caps = cjson.decode(ARGV[2])
local now = now_from(ARGV[4])
local ttl_ms = tonumber(ARGV[5])

if rcall('HEXISTS', K.nodes, node) == 1 then
  leave_pools(K, node, read_langs(K, node))
end
local langs = {asr = caps.asr, semantic = caps.semantic, tts = caps.tts}
local rec = {
  gen = rcall('INCR', K.gen_seq), digest = ARGV[3], max = caps.max, hardware = caps.hardware,
  registered_ms = now, last_hb_ms = now, reported_load = cjson.null,
}
write_langs(K, node, langs)
join_pools(K, node, langs, rec.max)
write_node(K, node, rec)
if rcall('HEXISTS', K.node_running, node) == 0 then
  rcall('HSET', K.node_running, node, 0)
end
rcall('ZADD', K.node_alive, now + ttl_ms, node)
return reply(CODE.OK, {gen = rec.gen, alive_until_ms = now + ttl_ms})
