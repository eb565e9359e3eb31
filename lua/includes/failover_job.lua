-- failover_job: move one active job off its node (timeout or node gone).
-- The old slot is released (when still held), the job goes to another node with attempt + 1,
-- excluding every node it was on, or fails when attempts are exhausted or no node is usable, or
-- fails quietly (error SESSION_ENDED) when its session ended: nobody is left to read the result.
-- Returns the action Python carries out (cancel on old node, assign on new one or tell session);
-- it carries the job's payload either way (its trace id goes on the cancel and the failure).
--@include "includes/select_node.lua"
--@include "includes/jobs.lua"
--@include "includes/sessions.lua"

-- C: {max_attempts, sample_size, scan_limit, job_timeout_ms, retention_ms}
local function failover_job(K, C, job_id, job, cause, now)
  local old_node = job.node
  release_slot(K, old_node, job_id)
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
  if not node then
    finish_job(K, job_id, job, 'failed', now, C.retention_ms)
    action.outcome = 'failed'
    action.attempt = job.attempt
    action.error = CODE_NAME[code] or code
    return action
  end
  reserve_slot(K, node, job_id, job.session, job.index, now)
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
