-- take_node_offline: the node's connection closed; fail its in-flight jobs over at once.
--
-- INVARIANT: only the current generation can take a node offline, so the clean-up of an old
-- socket never removes a newer registration. Afterwards the node is in no pool, has no
-- liveness, no record, no running count, and each of its active jobs is on another node
-- (attempt + 1) or failed.
-- Hash tag: every key is {prefix}:{domain}:<name> (one slot).
--
-- KEYS[1]  nodes         HASH node -> json record
-- KEYS[2]  node_running  HASH node -> running slots
-- KEYS[3]  node_alive    ZSET node -> alive until (ms)
-- KEYS[4]  pools         ZSET lex "<src>:<tgt>\0<load>\0<node>"
-- KEYS[5]  node_jobs     ZSET lex "<node>\0<job>"
-- KEYS[6]  sent          ZSET "<node>\0<session>\0<index>" -> sent at (ms)
-- KEYS[7]  jobs          HASH job -> json record
-- KEYS[8]  job_payloads  HASH job -> job_assign payload
-- KEYS[9]  deadlines     ZSET job -> deadline (ms)
-- KEYS[10] jobs_expiry   ZSET job -> record removed at (ms)
-- KEYS[11] sessions      HASH session -> json {node, turns}
--
-- ARGV[1] node id
-- ARGV[2] generation
-- ARGV[3] now (ms) or ""
-- ARGV[4] max_attempts
-- ARGV[5] select_scan_limit
-- ARGV[6] job_timeout_ms
-- ARGV[7] job_retention_ms
--
-- Reply: {0 OK, {actions = [{job_id, session, index, tgt, old_node, new_node?, attempt,
--                 outcome = reassigned|failed, error?, payload?, deadline_ms?, cause}]}}
--        {-1 NOT_REGISTERED} already offline (or never registered): nothing to do
--        {-2 STALE_GENERATION} a newer connection owns the node: nothing changed
-- Replay: the second call answers NOT_REGISTERED and changes nothing.

--@include "includes/scheduling_codes.lua"
--@include "includes/take_offline.lua"

local K = {nodes = KEYS[1], node_running = KEYS[2], node_alive = KEYS[3], pools = KEYS[4],
  node_jobs = KEYS[5], sent = KEYS[6], jobs = KEYS[7], job_payloads = KEYS[8],
  deadlines = KEYS[9], jobs_expiry = KEYS[10], sessions = KEYS[11]}
local node = ARGV[1]
local gen = tonumber(ARGV[2])
local now = now_from(ARGV[3])
local C = {max_attempts = tonumber(ARGV[4]), scan_limit = tonumber(ARGV[5]),
  job_timeout_ms = tonumber(ARGV[6]), retention_ms = tonumber(ARGV[7])}

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
