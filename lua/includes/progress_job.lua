-- progress_job: fenced forward-only state change of an active job (ack, start).
--@include "includes/jobs.lua"
--@include "includes/fence.lua"

local RANK = {dispatched = 1, acked = 2, running = 3}

local function progress_job(K, argv, target)
  local job_id, node, attempt = argv[1], argv[2], tonumber(argv[3])
  local now = now_from(argv[4])
  local job = read_job(K, job_id)
  local refused = fence_job(job, node, attempt)
  if refused then
    return reply(refused)
  end
  if not ACTIVE[job.state] then
    return reply(CODE.JOB_FINISHED, {state = job.state})
  end
  if RANK[job.state] >= RANK[target] then
    return reply(CODE.REPLAYED, {state = job.state, deadline_ms = job.deadline_ms})
  end
  job.state = target
  if argv[5] ~= '' then
    job.deadline_ms = now + tonumber(argv[5])
    rcall('ZADD', K.deadlines, job.deadline_ms, job_id)
  end
  write_job(K, job_id, job)
  return reply(CODE.OK, {state = job.state, deadline_ms = job.deadline_ms})
end
