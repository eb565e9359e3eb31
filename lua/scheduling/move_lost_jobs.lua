-- move_lost_jobs: a node that connected again reports how many jobs it runs: when that is
-- fewer than the jobs it was given before this connection registered and has not answered,
-- some of those were lost with the old connection (the real node drops a result that is ready
-- while its socket is down). Which ones it cannot say, so they all move now instead of at
-- their deadline; a result of one it still finishes wins if it comes first (complete_job:
-- first valid result of any attempt), and the node the job moved to gets job_cancel.
--
-- INVARIANT: only the node's current generation can report. Only jobs assigned to the node
-- before its current registration move (their `sent` mark is older than registered_ms): a job
-- assigned on this connection may still be on its way to the node. Each moves like a failover
-- (attempt + 1 on another node, never one it was on, or failed), in this one step.
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
-- ARGV[9] running: the jobs the node reports running (resource_usage.running_jobs)
--
-- Reply: {0 OK, {actions = [failover actions, as take_node_offline, cause = job_lost],
--                remaining}}  remaining: old jobs left on the node (none moved: all may run)
--        {-1 NOT_REGISTERED} no record for the node
--        {-2 STALE_GENERATION} a newer connection owns the node: nothing changed
-- Replay: a second call finds nothing left to move and returns no actions.

--@include "includes/scheduling_codes.lua"
--@include "includes/failover_job.lua"

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
local running = tonumber(ARGV[9])
local actions = {}
local old = {}
local lo, hi = '[' .. node .. '\0', '(' .. node .. '\1'
local prefix_len = #node + 1
for _, member in ipairs(rcall('ZRANGEBYLEX', K.node_jobs, lo, hi)) do
  local job_id = string.sub(member, prefix_len + 1)
  local job = read_job(K, job_id)
  if job and ACTIVE[job.state] and job.node == node then
    local sent_at = rcall('ZSCORE', K.sent, sent_member(node, job.session, job.index))
    if sent_at and tonumber(sent_at) < rec.registered_ms then
      old[#old + 1] = {job_id, job}
    end
  end
end
if #old <= running then
  return reply(CODE.OK, {remaining = #old})
end
for _, entry in ipairs(old) do
  actions[#actions + 1] = failover_job(K, C, entry[1], entry[2], 'job_lost', now)
end
return reply(CODE.OK, {actions = list_or_nil(actions), remaining = 0})
