-- jobs: the job record and its indexes.
-- A job is active while state is dispatched | acked | running: then it has one slot on
-- job.node, a node_jobs member and a deadline. A finished job (completed | failed) has none of
-- them, only a jobs_expiry entry after which the record and its idempotency entry go.
--@include "includes/util.lua"

local ACTIVE = {dispatched = true, acked = true, running = true}

local function read_job(K, job_id)
  local raw = rcall('HGET', K.jobs, job_id)
  if not raw then
    return nil
  end
  return cjson.decode(raw)
end

local function write_job(K, job_id, job)
  rcall('HSET', K.jobs, job_id, cjson.encode(job))
end

-- Marks an active job finished. The caller has released its slot already.
local function finish_job(K, job_id, job, state, now, retention_ms)
  job.state = state
  job.finished_ms = now
  write_job(K, job_id, job)
  rcall('ZREM', K.deadlines, job_id)
  rcall('HDEL', K.job_payloads, job_id)
  rcall('ZADD', K.jobs_expiry, now + retention_ms, job_id)
end
