-- slots: reserve and release one slot of a node, keeping node_running, node_jobs and node_free
-- in step. INVARIANT: node_running[node] == number of node_jobs members "<node>\0*". O(1): the
-- pools are not touched (the load is read from node_running at selection).
--@include "includes/pools.lua"

local function node_job_member(node, job_id)
  return node .. '\0' .. job_id
end

-- index may be a number (from a job record) or a string (ARGV): %d renders both the same,
-- where plain concatenation would print large numbers in exponent form.
local function sent_member(node, session, index)
  return node .. '\0' .. session .. '\0' .. string.format('%d', index)
end

-- Places job_id on node: one slot, the node's job index, the "ever sent" mark.
local function reserve_slot(K, node, job_id, session, index, now)
  local running = rcall('HINCRBY', K.node_running, node, 1)
  mark_free(K, node, running, rcall('HGET', K.node_slots, node))
  rcall('ZADD', K.node_jobs, 0, node_job_member(node, job_id))
  rcall('ZADD', K.sent, now, sent_member(node, session, index))
end

-- Frees job_id's slot on node, exactly once: only when the job is still indexed on the node.
local function release_slot(K, node, job_id)
  if rcall('ZREM', K.node_jobs, node_job_member(node, job_id)) == 0 then
    return false
  end
  if read_running(K, node) > 0 then
    local running = rcall('HINCRBY', K.node_running, node, -1)
    mark_free(K, node, running, rcall('HGET', K.node_slots, node))
  end
  return true
end
