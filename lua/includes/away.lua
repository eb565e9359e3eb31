-- away: a job whose node went offline while no other node could take it stays on that node,
-- with its slot and its deadline, waiting for the node to come back with the result (the real
-- node reconnects with the same id after a few seconds and sends it on the new connection). It
-- leaves when the node sends the result, when the reconnected node reports that it runs nothing
-- (the job was lost: move_lost_jobs), or at its deadline (sweep). INVARIANT: a node without a
-- record keeps a node_running count only while such jobs hold slots on it.
--@include "includes/slots.lua"

-- Frees job_id's slot on node (see release_slot); the count of a node that is gone goes with
-- its last slot.
local function release_job_slot(K, node, job_id)
  local released = release_slot(K, node, job_id)
  if released and rcall('HEXISTS', K.nodes, node) == 0 and read_running(K, node) == 0 then
    rcall('HDEL', K.node_running, node)
  end
  return released
end

local function is_connected(K, node)
  return rcall('HEXISTS', K.nodes, node) == 1
end
