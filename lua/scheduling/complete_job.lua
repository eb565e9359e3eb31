-- complete_job: a node sent a job's result (success or error).
--
-- INVARIANT: first valid result wins. A result is valid from any attempt the job had, sent by
-- the node that held that attempt (a node whose socket dropped while it worked sends it from its
-- next connection, possibly to another replica, after the job moved on); a foreign node, an
-- attempt the node never held and a job that already has its result are refused and change
-- nothing. Accepting one completes the job in this step: the slot of the attempt that holds it
-- now is released exactly once (a moved attempt's slot went with the move), and the reply names
-- that attempt's node when it is another, connected one, so it gets `job_cancel`. The finished
-- record is kept job_retention_ms (so replays and idempotent dispatch retries still find it),
-- then the sweeper removes it.
-- Hash tag: every key is {prefix}:{domain}:<name> (one slot).
--
-- KEYS[1] nodes         HASH node -> json record
-- KEYS[2] node_running  HASH node -> running slots
-- KEYS[3] pools         ZSET lex "<src>:<tgt>\0<load>\0<node>"
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
-- Reply: {0 OK, {state, session, index, tgt, cancel_node?}} completed now; cancel_node: the
--          node holding the job's current attempt, when it is another one and connected
--        {2 ALREADY_FINISHED, {state, session, index, tgt}} the same (node, attempt) completed
--          it before: nothing changed
--        {-6 JOB_NOT_FOUND} {-7 STALE_ATTEMPT} the node never held this attempt, or another
--          attempt finished the job {-8 FOREIGN_NODE} the job was never on this node
-- Replay: ALREADY_FINISHED.

--@include "includes/jobs.lua"
--@include "includes/fence.lua"
--@include "includes/away.lua"

local K = {nodes = KEYS[1], node_running = KEYS[2], pools = KEYS[3], node_jobs = KEYS[4],
  jobs = KEYS[5], job_payloads = KEYS[6], deadlines = KEYS[7], jobs_expiry = KEYS[8]}
local job_id, node, attempt = ARGV[1], ARGV[2], tonumber(ARGV[3])
local ok = ARGV[4] == '1'
local now = now_from(ARGV[5])
local retention_ms = tonumber(ARGV[6])

local job = read_job(K, job_id)
local refused = fence_result(job, node, attempt)
if refused then
  return reply(refused)
end
local info = {session = job.session, index = job.index, tgt = job.tgt}
if not ACTIVE[job.state] then
  if (job.result_attempt or job.attempt) ~= attempt then
    return reply(-7)
  end
  info.state = job.state
  return reply(2, info)
end
local holder = job.node
release_job_slot(K, holder, job_id)
if holder ~= node and is_connected(K, holder) then
  info.cancel_node = holder
end
job.result_attempt = attempt
finish_job(K, job_id, job, ok and 'completed' or 'failed', now, retention_ms)
info.state = job.state
return reply(0, info)
