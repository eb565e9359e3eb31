-- audit_deadlines: the facts of a page of jobs with a deadline entry, read in one atomic step
-- (read-only).
--
-- INVARIANT (checked by scheduler.audit, never changed here): a job is in deadlines exactly
-- while its record is active, and every active job holds its node's slot (a node_jobs member
-- "<node>\0<job>"). The page comes from a ZSCAN made before this call: a job that finished
-- meanwhile has left deadlines and is skipped here, so it never looks like a violation.
-- O(page x log N).
-- Hash tag: every key is {prefix}:{domain}:<name> (one slot).
--
-- KEYS[1] deadlines  ZSET active job -> deadline (ms)
-- KEYS[2] jobs       HASH job -> json record
-- KEYS[3] node_jobs  ZSET lex "<node>\0<job>"
--
-- ARGV[1..n] job ids (one page)
--
-- Reply: {0 OK, [{job, state, node, indexed}, ...]} for the jobs still in deadlines; state and
--        node are "" when the record is gone.

--@include "includes/scheduling_codes.lua"

local rcall = redis.call
local K = {deadlines = KEYS[1], jobs = KEYS[2], node_jobs = KEYS[3]}

local facts = {}
for i = 1, #ARGV do
  local job = ARGV[i]
  if rcall('ZSCORE', K.deadlines, job) then
    local raw = rcall('HGET', K.jobs, job)
    local record = raw and cjson.decode(raw) or {}
    local node = record.node or ''
    facts[#facts + 1] = {
      job = job,
      state = record.state or '',
      node = node,
      indexed = node ~= '' and rcall('ZSCORE', K.node_jobs, node .. '\0' .. job) ~= false,
    }
  end
end
if #facts == 0 then
  return {CODE.OK, '[]'}
end
return {CODE.OK, cjson.encode(facts)}
