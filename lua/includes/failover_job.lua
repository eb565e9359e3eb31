-- failover_job: move one active job off its node (timeout, node gone, or job lost).
-- The old slot is released (when still held), the job goes to another node with attempt + 1,
-- excluding every node it was on, or fails when attempts are exhausted or no node is usable, or
-- fails quietly (error SESSION_ENDED) when its session ended: nobody is left to read the result.
-- With `hold` (its node went offline) a job no other node can take stays on its node instead,
-- with its slot and deadline (see away.lua): its result may still come when the node reconnects.
-- Returns the action Python carries out (cancel on old node, assign on new one or tell session);
-- it carries the job's payload either way (its trace id goes on the cancel and the failure).
--@include "includes/select_node.lua"
--@include "includes/jobs.lua"
--@include "includes/sessions.lua"
--@include "includes/away.lua"

-- C: {max_attempts, sample_size, scan_limit, job_timeout_ms, retention_ms}
-- hold (node_offline only): when no other node can take the job, keep it on its node (outcome
-- "held") instead of failing it.
local function failover_job(K, C, job_id, job, cause, now, hold)
  local old_node = job.node
  local action = {job_id = job_id, session = job.session, index = job.index, tgt = job.tgt,
    old_node = old_node, cause = cause,
    payload = rcall('HGET', K.job_payloads, job_id) or nil}
  local node, code
  if session_ended(K, job.session) then
    code = 'SESSION_ENDED'
  elseif job.attempt >= C.max_attempts then
    code = 'MAX_ATTEMPTS'
  else
    node, code = select_node(K, C, job.pair, job.session, job.index, set_of(job.tried), {},
      job_id .. '\0' .. job.attempt, now)
  end
  if not node and hold and code ~= 'SESSION_ENDED' then
    -- held (issue 11): the job keeps its node, slot and deadline; held_since marks it for the
    -- audit (an active job on a node with no record is legitimate while held, until its
    -- deadline). Cleared when the job moves on; a returning node's result completes it.
    job.held_since = now
    write_job(K, job_id, job)
    action.outcome = 'held'
    action.attempt = job.attempt
    action.error = CODE_NAME[code] or code
    return action
  end
  -- a silent node that is still connected is told to drop the job
  action.cancel_old = cause == 'timeout' and is_connected(K, old_node)
  release_job_slot(K, old_node, job_id)
  if not node then
    finish_job(K, job_id, job, 'failed', now, C.retention_ms)
    action.outcome = 'failed'
    action.attempt = job.attempt
    action.error = CODE_NAME[code] or code
    return action
  end
  reserve_slot(K, node, job_id, job.session, job.index, now)
  job.held_since = nil
  job.node = node
  job.attempt = job.attempt + 1
  job.state = 'dispatched'
  job.deadline_ms = now + C.job_timeout_ms
  job.tried[#job.tried + 1] = node
  write_job(K, job_id, job)
  rcall('ZADD', K.deadlines, job.deadline_ms, job_id)
  follow_move(K, job.session, job.tgt, old_node, node)
  action.outcome = 'reassigned'
  action.new_node = node
  action.attempt = job.attempt
  action.deadline_ms = job.deadline_ms
  return action
end
