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
-- then the sweeper removes it. O(1): the slot is one count (and node_free when the node had
-- been full), no pool member changes.
-- Hand-off (issue 11): when jobs wait for a slot, the freed slot goes at once to the oldest
-- waiter (of the first slot_wait_lookahead) whose pair the holder serves and whose session has
-- not ended (never a holder out of the pools, such as an offline node's held job): one ZCARD
-- when nobody waits, O(slot_wait_lookahead) otherwise, never O(the node's pairs).
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
-- KEYS[9] pools         ZSET lex "<src>:<tgt>\0<node>"
-- KEYS[10] sent         ZSET "<node>\0<session>\0<index>" -> sent at (ms)
-- KEYS[11] waiting      ZSET lex "<pair>\0<ticket>\0<job>" (jobs waiting for a slot)
-- KEYS[12] waiting_order ZSET job -> ticket (arrival order of every waiter)
-- KEYS[13] nodes        HASH node -> json record (is the current holder connected?)
-- KEYS[14] sessions     HASH session -> json {node, turns} or {ended} (a waiter's session ended?)
--
-- ARGV[1] job id
-- ARGV[2] node id
-- ARGV[3] attempt
-- ARGV[4] ok: "1" success result, "0" error result
-- ARGV[5] now (ms) or ""
-- ARGV[6] job_retention_ms
-- ARGV[7] job_timeout_ms (of a waiter handed the slot)
-- ARGV[8] slot_wait_lookahead
-- ARGV[9] the caller's nonce or "": kept with the result, so that a call retried after its
--         reply was lost (the Redis client re-runs the script) learns the completion was its own
--
-- Reply: {0 OK, {state, session, index, tgt, handed?, cancel_node?}} completed now; `handed`
--          (absent when nobody took the slot) is the waiter placed on the freed slot's node, as
--          a failover action (cause "slot_wait") for the caller to carry out; cancel_node: the
--          node holding the job's current attempt, when it is another one and connected
--        {2 ALREADY_FINISHED, {state, session, index, tgt, own?}} the same (node, attempt)
--          completed it before: nothing changed; own: that completion was this caller's (its
--          nonce), whose reply was lost, so the result has not been forwarded yet
--        {-6 JOB_NOT_FOUND} {-7 STALE_ATTEMPT} the node never held this attempt, or another
--          attempt finished the job {-8 FOREIGN_NODE} the job was never on this node
--        {-9 JOB_FINISHED} the job failed without a result (at its deadline): the client got
--          its error, a late result is not a replay of anything
-- Replay: ALREADY_FINISHED.

--@include "includes/scheduling_codes.lua"
--@include "includes/jobs.lua"
--@include "includes/fence.lua"
--@include "includes/away.lua"
--@include "includes/waiting.lua"

local K = {node_slots = KEYS[1], node_free = KEYS[2], node_running = KEYS[3],
  node_jobs = KEYS[4], jobs = KEYS[5], job_payloads = KEYS[6], deadlines = KEYS[7],
  jobs_expiry = KEYS[8], pools = KEYS[9], sent = KEYS[10], waiting = KEYS[11],
  waiting_order = KEYS[12], nodes = KEYS[13], sessions = KEYS[14]}
local job_id, node, attempt = ARGV[1], ARGV[2], tonumber(ARGV[3])
local ok = ARGV[4] == '1'
local now = now_from(ARGV[5])
local retention_ms = tonumber(ARGV[6])
local C = {job_timeout_ms = tonumber(ARGV[7]), wait_lookahead = tonumber(ARGV[8])}

local job = read_job(K, job_id)
local refused = fence_result(job, node, attempt)
if refused then
  return reply(refused)
end
local info = {session = job.session, index = job.index, tgt = job.tgt}
if not ACTIVE[job.state] then
  if job.state == 'failed' and job.result_attempt == nil then
    -- it ended without a result (failed at its deadline): the client was told so already
    return reply(CODE.JOB_FINISHED, {state = job.state})
  end
  if (job.result_attempt or job.attempt) ~= attempt then
    return reply(CODE.STALE_ATTEMPT)
  end
  info.state = job.state
  info.own = ARGV[9] ~= '' and job.result_nonce == ARGV[9] or nil
  return reply(CODE.ALREADY_FINISHED, info)
end
local holder = job.node
local released = release_job_slot(K, holder, job_id)
if holder ~= node and is_connected(K, holder) then
  info.cancel_node = holder
end
job.result_attempt = attempt
job.result_nonce = ARGV[9] ~= '' and ARGV[9] or nil
finish_job(K, job_id, job, ok and 'completed' or 'failed', now, retention_ms)
info.state = job.state
if released then
  info.handed = hand_off_slot(K, C, holder, now)
end
return reply(CODE.OK, info)
