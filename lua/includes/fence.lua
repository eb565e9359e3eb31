-- fence: is a message about a job from the job's current (node, attempt)?
-- Returns nil when it is, else the refusal code. A message of an earlier attempt is STALE even
-- when it comes from another node: the attempt is what moved on.

local function fence_job(job, node, attempt)
  if not job then
    return -6
  end
  if job.attempt ~= attempt then
    return -7
  end
  if job.node ~= node then
    return -8
  end
  return nil
end
