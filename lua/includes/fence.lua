-- fence: who may speak for a job.
-- Progress (ack, start) only from the job's current (node, attempt): a message of an earlier
-- attempt is STALE even when it comes from another node, the attempt is what moved on.
-- A result from any attempt the job ever had, sent by the node that held that attempt
-- (tried[attempt] == node): a node whose socket dropped while it worked sends its result on its
-- next connection, after the job was moved (see complete_job). A node the job was never on is
-- FOREIGN; an attempt this node never held (or that never existed) is STALE.
-- Each returns nil when the message may be taken, else the refusal code.
--@include "includes/scheduling_codes.lua"

local function fence_job(job, node, attempt)
  if not job then
    return CODE.JOB_NOT_FOUND
  end
  if job.attempt ~= attempt then
    return CODE.STALE_ATTEMPT
  end
  if job.node ~= node then
    return CODE.FOREIGN_NODE
  end
  return nil
end

local function fence_result(job, node, attempt)
  if not job then
    return CODE.JOB_NOT_FOUND
  end
  local held = false
  for _, tried in ipairs(job.tried or {}) do
    if tried == node then
      held = true
    end
  end
  if not held then
    return CODE.FOREIGN_NODE
  end
  if attempt == nil or attempt < 1 or attempt > job.attempt or job.tried[attempt] ~= node then
    return CODE.STALE_ATTEMPT
  end
  return nil
end
