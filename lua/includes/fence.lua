-- fence: is a message about a job from the job's current (node, attempt)?
-- Returns nil when it is, else the refusal code. A message of an earlier attempt is STALE even
-- when it comes from another node: the attempt is what moved on.
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
