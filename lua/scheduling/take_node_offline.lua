-- take_node_offline: the node's connection closed; fail its in-flight jobs over at once.
--
-- INVARIANT: only the current generation can take a node offline, so the clean-up of an old
-- socket never removes a newer registration. Afterwards the node is in no pool, has no
-- liveness, no record, and each of its active jobs is on another node (attempt + 1), failed,
-- or held on it when no other node can take it (its slot kept: the running count then stays,
-- without node_slots, so never in node_free; see includes/away.lua).
-- Hash tag: every key is {prefix}:{domain}:<name> (one slot).
--
-- KEYS[1]  nodes         HASH node -> json record {gen, digest, max, hardware, ...}
-- KEYS[2]  node_langs    HASH node -> json {asr, semantic, tts}
-- KEYS[3]  node_slots    HASH node -> max slots, while the node is in the pools
-- KEYS[4]  node_free     SET  nodes of the pools with a free slot
-- KEYS[5]  node_running  HASH node -> running slots
-- KEYS[6]  node_alive    ZSET node -> alive until (ms)
-- KEYS[7]  pools         ZSET lex "<src>:<tgt>\0<node>"
-- KEYS[8]  node_jobs     ZSET lex "<node>\0<job>"
-- KEYS[9]  sent          ZSET "<node>\0<session>\0<index>" -> sent at (ms)
-- KEYS[10] jobs          HASH job -> json record
-- KEYS[11] job_payloads  HASH job -> job_assign payload
-- KEYS[12] deadlines     ZSET job -> deadline (ms)
-- KEYS[13] jobs_expiry   ZSET job -> record removed at (ms)
-- KEYS[14] sessions      HASH session -> json {node, turns}
--
-- ARGV[1] node id
-- ARGV[2] generation
-- ARGV[3] now (ms) or ""
-- ARGV[4] max_attempts
-- ARGV[5] select_scan_limit
-- ARGV[6] job_timeout_ms
-- ARGV[7] job_retention_ms
-- ARGV[8] select_sample_size
--
-- Reply: {0 OK, {actions = [{job_id, session, index, tgt, old_node, new_node?, attempt,
--                 outcome = reassigned|failed|held, error?, payload?, deadline_ms?, cause}]}}
--        {-1 NOT_REGISTERED} already offline (or never registered): nothing to do
--        {-2 STALE_GENERATION} a newer connection owns the node: nothing changed
-- Replay: the second call answers NOT_REGISTERED and changes nothing.

--@include "includes/scheduling_codes.lua"
--@include "includes/take_offline.lua"

local K = {nodes = KEYS[1], node_langs = KEYS[2], node_slots = KEYS[3], node_free = KEYS[4],
  node_running = KEYS[5], node_alive = KEYS[6], pools = KEYS[7], node_jobs = KEYS[8],
  sent = KEYS[9], jobs = KEYS[10], job_payloads = KEYS[11], deadlines = KEYS[12],
  jobs_expiry = KEYS[13], sessions = KEYS[14]}
local node = ARGV[1]
local gen = tonumber(ARGV[2])
local now = now_from(ARGV[3])
local C = {max_attempts = tonumber(ARGV[4]), scan_limit = tonumber(ARGV[5]),
  job_timeout_ms = tonumber(ARGV[6]), retention_ms = tonumber(ARGV[7]),
  sample_size = tonumber(ARGV[8])}

local rec = read_node(K, node)
if not rec then
  return reply(CODE.NOT_REGISTERED)
end
if rec.gen ~= gen then
  return reply(CODE.STALE_GENERATION)
end
local actions = {}
take_offline(K, C, node, now, actions)
return reply(CODE.OK, {actions = list_or_nil(actions)})
