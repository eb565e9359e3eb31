-- audit_jobs: the facts of a page of active jobs (node_jobs members), read in one atomic step
-- (read-only).
--
-- INVARIANT (checked by scheduler.audit, never changed here): every node_jobs member names a
-- job whose record is active on that node, whose node is registered and live (or, for a job
-- held for its node that went offline, `held_since` in its record: see includes/away.lua), and
-- whose deadline is in deadlines and not long past (the sweeper fails jobs over at their
-- deadline and takes dead nodes offline). O(page x log N); pages follow the lex order of node_jobs, so
-- members added or removed meanwhile never stop the walk.
-- Hash tag: every key is {prefix}:{domain}:<name> (one slot).
--
-- KEYS[1] node_jobs   ZSET lex "<node>\0<job>"
-- KEYS[2] jobs        HASH job -> json record
-- KEYS[3] nodes       HASH node -> json record
-- KEYS[4] node_alive  ZSET node -> alive until (ms)
-- KEYS[5] deadlines   ZSET active job -> deadline (ms)
--
-- ARGV[1] lex start: "-" for the first page, else "(" .. the last member of the previous page
-- ARGV[2] page size
-- ARGV[3] now (ms) or ""
--
-- Reply: {0 OK, {now, last, jobs = [{node, job, known, alive_until, state, job_node,
--        deadline, record_deadline, held}, ...]}}; last is "" when the walk is done; alive_until,
--        deadline and record_deadline are -1 and state / job_node "" when absent.

--@include "includes/scheduling_codes.lua"
--@include "includes/util.lua"

local K = {node_jobs = KEYS[1], jobs = KEYS[2], nodes = KEYS[3], node_alive = KEYS[4],
  deadlines = KEYS[5]}
local count = tonumber(ARGV[2])
local now = now_from(ARGV[3])

local members = rcall('ZRANGEBYLEX', K.node_jobs, ARGV[1], '+', 'LIMIT', 0, count)
local jobs = {}
for i, member in ipairs(members) do
  local sep = string.find(member, '\0', 1, true)
  local node, job = string.sub(member, 1, sep - 1), string.sub(member, sep + 1)
  local alive = rcall('ZSCORE', K.node_alive, node)
  local deadline = rcall('ZSCORE', K.deadlines, job)
  local raw = rcall('HGET', K.jobs, job)
  local record = raw and cjson.decode(raw) or {}
  jobs[i] = {
    node = node,
    job = job,
    known = rcall('HEXISTS', K.nodes, node) == 1,
    alive_until = alive and tonumber(alive) or -1,
    state = record.state or '',
    job_node = record.node or '',
    deadline = deadline and tonumber(deadline) or -1,
    record_deadline = tonumber(record.deadline_ms) or -1,
    held = record.held_since ~= nil,
  }
end
local last = ''
if #members == count then
  last = members[#members]
end
return {CODE.OK, cjson.encode({now = now, last = last, jobs = list_or_nil(jobs)})}
