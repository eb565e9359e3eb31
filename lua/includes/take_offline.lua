-- take_offline: a node leaves (socket closed with the current generation, or liveness expired).
-- It leaves every pool (O(its pairs)), its record, languages and liveness go, and each of its
-- active jobs is failed over at once; a job no other node can take stays on it, away (see
-- away.lua), with its slot (a running count without node_slots: never in node_free).
-- INVARIANT: afterwards nothing references the node but `sent` marks (kept so a reconnecting
-- node never gets a (session, index) it already had) and its away jobs with their slots.
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
  local held = 0
  for _, member in ipairs(members) do
    local job_id = string.sub(member, prefix_len + 1)
    local job = read_job(K, job_id)
    if job and ACTIVE[job.state] and job.node == node then
      local action = failover_job(K, C, job_id, job, 'node_offline', now, true)
      if action.outcome == 'held' then
        held = held + 1
      end
      actions[#actions + 1] = action
    else
      rcall('ZREM', K.node_jobs, member)
    end
  end
  -- every other slot is gone with the node (release_job_slot decremented them one by one)
  if held == 0 then
    rcall('HDEL', K.node_running, node)
  else
    rcall('HSET', K.node_running, node, held)
  end
  return left
end
