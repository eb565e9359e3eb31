-- register_node: a node connected and announced its capabilities; it gets a new generation.
--
-- INVARIANT: one record per node id; the newest registration wins. Its generation (from a
-- domain-wide counter, so never reused even after the record is gone) fences heartbeats and
-- offline calls: a stale connection's clean-up can never remove a newer registration.
-- The node joins the pool of every directed pair asr x semantic (identity pairs included).
-- Re-registering a live id keeps its running count and active jobs (they finish or time out).
-- Hash tag: every key is {prefix}:{domain}:<name> (one slot).
--
-- KEYS[1] nodes         HASH node -> json record
-- KEYS[2] node_running  HASH node -> running slots
-- KEYS[3] node_alive    ZSET node -> alive until (ms)
-- KEYS[4] pools         ZSET lex "<src>:<tgt>\0<load>\0<node>"
-- KEYS[5] gen_seq       STRING generation counter
--
-- ARGV[1] node id (validated by the caller)
-- ARGV[2] capabilities json {asr=[...], semantic=[...], tts=[...], max=<slots>, hardware={...}}
-- ARGV[3] now (ms) or "" for server time
-- ARGV[4] node_ttl_ms
--
-- Reply: {0 OK, {gen, pairs, alive_until_ms}}
-- Replay: a repeated call is a new registration (new generation); nothing else differs.

--@include "includes/scheduling_codes.lua"
--@include "includes/pools.lua"

local K = {nodes = KEYS[1], node_running = KEYS[2], node_alive = KEYS[3], pools = KEYS[4],
  gen_seq = KEYS[5]}
local node = ARGV[1]
local caps = cjson.decode(ARGV[2])
local now = now_from(ARGV[3])
local ttl_ms = tonumber(ARGV[4])

local running = read_running(K, node)
local old = read_node(K, node)
if old then
  leave_pools(K, node, old, running)
end

local pair_list = pairs_of(caps)

local rec = {
  gen = rcall('INCR', K.gen_seq),
  asr = caps.asr, semantic = caps.semantic, tts = caps.tts,
  max = caps.max, hardware = caps.hardware, pairs = pair_list,
  registered_ms = now, last_hb_ms = now, reported_load = cjson.null, in_pools = false,
}
join_pools(K, node, rec, running)
write_node(K, node, rec)
if running == 0 then
  rcall('HSET', K.node_running, node, 0)
end
rcall('ZADD', K.node_alive, now + ttl_ms, node)
return reply(CODE.OK, {gen = rec.gen, pairs = list_or_nil(pair_list), alive_until_ms = now + ttl_ms})
