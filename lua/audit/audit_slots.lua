-- audit_slots: the slot facts of a page of nodes, read in one atomic step (read-only).
--
-- INVARIANT (checked by scheduler.audit, never changed here): node_running[n] equals the number
-- of n's members in node_jobs, and n is in node_free exactly while it is in the pools with
-- running < slots. Reading the four facts of a node in one script means a job completing during
-- the audit can never look like a leaked slot. O(page x log N): one HGET / ZLEXCOUNT per node.
-- Hash tag: every key is {prefix}:{domain}:<name> (one slot).
--
-- KEYS[1] nodes         HASH node -> json record
-- KEYS[2] node_slots    HASH node -> max slots, while the node is in the pools
-- KEYS[3] node_running  HASH node -> running slots
-- KEYS[4] node_jobs     ZSET lex "<node>\0<job>"
-- KEYS[5] node_free     SET  nodes of the pools with a free slot
--
-- ARGV[1..n] node ids (one page)
--
-- Reply: {0 OK, [{node, known, running, slots, jobs, free}, ...]} in ARGV order; running and
--        slots are -1 when the field is absent.

--@include "includes/scheduling_codes.lua"

local rcall = redis.call
local K = {nodes = KEYS[1], node_slots = KEYS[2], node_running = KEYS[3], node_jobs = KEYS[4],
  node_free = KEYS[5]}

local facts = {}
for i = 1, #ARGV do
  local node = ARGV[i]
  local running = rcall('HGET', K.node_running, node)
  local slots = rcall('HGET', K.node_slots, node)
  facts[i] = {
    node = node,
    known = rcall('HEXISTS', K.nodes, node) == 1,
    running = running and tonumber(running) or -1,
    slots = slots and tonumber(slots) or -1,
    jobs = rcall('ZLEXCOUNT', K.node_jobs, '[' .. node .. '\0', '(' .. node .. '\1'),
    free = rcall('SISMEMBER', K.node_free, node) == 1,
  }
end
return {CODE.OK, cjson.encode(facts)}
