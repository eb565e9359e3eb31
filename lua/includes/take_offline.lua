-- take_offline: a node leaves (socket closed with the current generation, or liveness expired).
-- It leaves every pool (O(its pairs)), its record, languages, running count and liveness go, and each of its active jobs
-- is failed over at once. INVARIANT: afterwards nothing references the node but `sent` marks
-- (kept so a reconnecting node never gets a (session, index) it already had).
--@include "includes/failover_job.lua"

-- Returns how many pairs the node left.
local function take_offline(K, C, node, now, actions)
  local left = leave_pools(K, node, read_langs(K, node))
  rcall('ZREM', K.node_alive, node)
  rcall('HDEL', K.nodes, node)
  rcall('HDEL', K.node_langs, node)
  local lo, hi = '[' .. node .. '\0', '(' .. node .. '\1'
  local members = rcall('ZRANGEBYLEX', K.node_jobs, lo, hi)
  local prefix_len = #node + 1
  for _, member in ipairs(members) do
    local job_id = string.sub(member, prefix_len + 1)
    local job = read_job(K, job_id)
    if job and ACTIVE[job.state] and job.node == node then
      actions[#actions + 1] = failover_job(K, C, job_id, job, 'node_offline', now)
    else
      rcall('ZREM', K.node_jobs, member)
    end
  end
  -- every slot is gone with the node (release_slot decremented them one by one)
  rcall('HDEL', K.node_running, node)
  return left
end
