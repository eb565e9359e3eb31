-- audit_slots: the slot facts of a page of nodes, read in one atomic step (read-only).
--
-- INVARIANT (checked by scheduler.audit, never changed here): node_running[n] equals the number
-- of n's members in node_jobs, and n is in node_free exactly while it is in the pools with
-- running < slots. A node with no record keeps a count only for jobs held for its return
-- (`held_since` in the job record, includes/away.lua): for such a node its jobs are read to
-- count them (at most the slots it had). Reading the four facts of a node in one script means a job completing during
-- the audit can never look like a leaked slot. O(page x log N): one HGET / ZLEXCOUNT per node.
-- Hash tag: every key is {prefix}:{domain}:<name> (one slot).
--
-- KEYS[1] nodes         HASH node -> json record
-- KEYS[2] node_slots    HASH node -> max slots, while the node is in the pools
-- KEYS[3] node_running  HASH node -> running slots
-- KEYS[4] node_jobs     ZSET lex "<node>\0<job>"
-- KEYS[5] node_free     SET  nodes of the pools with a free slot
-- KEYS[6] jobs          HASH job -> json record
--
-- ARGV[1..n] node ids (one page)
--
-- Reply: {0 OK, [{node, known, running, slots, jobs, free, held}, ...]} in ARGV order; running
--        and slots are -1 when the field is absent; held (0 for a registered node): the node's
--        active jobs on it marked held.

--@include "includes/scheduling_codes.lua"

local rcall = redis.call
local K = {nodes = KEYS[1], node_slots = KEYS[2], node_running = KEYS[3], node_jobs = KEYS[4],
  node_free = KEYS[5], jobs = KEYS[6]}

local ACTIVE = {dispatched = true, acked = true, running = true}

-- The node's active jobs held for its return (read only for a node with no record).
local function held_jobs(node)
  local held = 0
  for _, member in ipairs(rcall('ZRANGEBYLEX', K.node_jobs, '[' .. node .. '\0',
      '(' .. node .. '\1')) do
    local raw = rcall('HGET', K.jobs, string.sub(member, #node + 2))
    local job = raw and cjson.decode(raw)
    if job and ACTIVE[job.state] and job.node == node and job.held_since ~= nil then
      held = held + 1
    end
  end
  return held
end

local facts = {}
for i = 1, #ARGV do
  local node = ARGV[i]
  local running = rcall('HGET', K.node_running, node)
  local slots = rcall('HGET', K.node_slots, node)
  local known = rcall('HEXISTS', K.nodes, node) == 1
  facts[i] = {
    node = node,
    known = known,
    running = running and tonumber(running) or -1,
    slots = slots and tonumber(slots) or -1,
    jobs = rcall('ZLEXCOUNT', K.node_jobs, '[' .. node .. '\0', '(' .. node .. '\1'),
    free = rcall('SISMEMBER', K.node_free, node) == 1,
    held = known and 0 or held_jobs(node),
  }
end
return {CODE.OK, cjson.encode(facts)}
