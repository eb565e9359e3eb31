-- complete_job: the node sent the job's result (success or error).
--
-- INVARIANT: fenced by (job, node, attempt): a stale attempt or a foreign node is refused and
-- changes nothing. The slot is released exactly once: the first accepted completion releases
-- it, later ones are no-ops. The finished record is kept job_retention_ms (so replays and
-- idempotent dispatch retries still find it), then the sweeper removes it. O(1): the slot is
-- one count (and node_free when the node had been full), no pool member changes.
-- Hash tag: every key is {prefix}:{domain}:<name> (one slot).
--
-- KEYS[1] node_slots    HASH node -> max slots, while the node is in the pools
-- KEYS[2] node_free     SET  nodes of the pools with a free slot
-- KEYS[3] node_running  HASH node -> running slots
-- KEYS[4] node_jobs     ZSET lex "<node>\0<job>"
-- KEYS[5] jobs          HASH job -> json record
-- KEYS[6] job_payloads  HASH job -> job_assign payload
-- KEYS[7] deadlines     ZSET job -> deadline (ms)
-- KEYS[8] jobs_expiry   ZSET job -> record removed at (ms)
--
-- ARGV[1] job id
-- ARGV[2] node id
-- ARGV[3] attempt
-- ARGV[4] ok: "1" success result, "0" error result
-- ARGV[5] now (ms) or ""
-- ARGV[6] job_retention_ms
--
-- Reply: {0 OK, {state, session, index, tgt}} completed now
--        {2 ALREADY_FINISHED, {state, session, index, tgt}} repeated completion: nothing changed
--        {-6 JOB_NOT_FOUND} {-7 STALE_ATTEMPT} {-8 FOREIGN_NODE}
-- Replay: ALREADY_FINISHED.

--@include "includes/scheduling_codes.lua"
--@include "includes/slots.lua"
--@include "includes/jobs.lua"
--@include "includes/fence.lua"

local K = {node_slots = KEYS[1], node_free = KEYS[2], node_running = KEYS[3],
  node_jobs = KEYS[4], jobs = KEYS[5], job_payloads = KEYS[6], deadlines = KEYS[7],
  jobs_expiry = KEYS[8]}
local job_id, node, attempt = ARGV[1], ARGV[2], tonumber(ARGV[3])
local ok = ARGV[4] == '1'
local now = now_from(ARGV[5])
local retention_ms = tonumber(ARGV[6])

local job = read_job(K, job_id)
local refused = fence_job(job, node, attempt)
if refused then
  return reply(refused)
end
local info = {session = job.session, index = job.index, tgt = job.tgt}
if not ACTIVE[job.state] then
  info.state = job.state
  return reply(CODE.ALREADY_FINISHED, info)
end
release_slot(K, node, job_id)
finish_job(K, job_id, job, ok and 'completed' or 'failed', now, retention_ms)
info.state = job.state
return reply(CODE.OK, info)
