-- waiting: jobs that wait for a slot when every node of their pair is busy (issue 11).
-- A waiting job has a full record (state "waiting", node "", attempt 0), its payload, its
-- idempotency entry and a deadline (when the wait expires: the sweep fails it with
-- NO_AVAILABLE_NODE); it holds no slot and no node_jobs member. Two indexes, one ticket each
-- (wait_seq, arrival order):
--   waiting        ZSET lex "<pair>\0<ticket, 15 digits>\0<job>": a pair's waiters in arrival
--                  order, so its oldest one and its count are O(log N) whatever the pairs;
--   waiting_order  ZSET job -> ticket: every waiter in arrival order, for a freed slot's node
--                  (which serves many pairs) to find the oldest waiter it can take without
--                  looking at its pairs one by one.
-- INVARIANT: a job is in both indexes exactly while its state is "waiting"; a pair's waiters
-- are placed oldest first (a new job of a pair with waiters queues behind them); a waiter whose
-- session ended is never placed (nobody would read its result): the sweep ends it quietly
-- (SESSION_ENDED), and a freed slot passes over it to the next waiter.
-- K.sessions is needed by every script that includes this file.
--@include "includes/select_node.lua"
--@include "includes/jobs.lua"
--@include "includes/sessions.lua"

local TICKET_FORMAT = '%015d'

local function waiting_member(pair, ticket, job_id)
  return pair .. '\0' .. string.format(TICKET_FORMAT, ticket) .. '\0' .. job_id
end

local function waiting_count(K, pair)
  local lo, hi = pool_range(pair)
  return rcall('ZLEXCOUNT', K.waiting, lo, hi)
end

local function oldest_waiter(K, pair)
  local lo, hi = pool_range(pair)
  local member = rcall('ZRANGEBYLEX', K.waiting, lo, hi, 'LIMIT', 0, 1)[1]
  if not member then
    return nil
  end
  -- "<pair>\0<ticket>\0<job>": the job id follows the ticket's 15 digits and its separator
  return string.sub(member, #pair + 1 + 15 + 2)
end

-- Writes job (its fields but state, node, attempt, tried and deadline set) as a waiter.
local function enqueue_job(K, C, job_id, job, now)
  local ticket = rcall('INCR', K.wait_seq)
  job.state = 'waiting'
  job.node = ''
  job.attempt = 0
  job.tried = nil -- absent, not {} (cjson would write an object): no node tried yet
  job.deadline_ms = now + C.wait_ms
  job.ticket = ticket
  job.waiting_since = now
  write_job(K, job_id, job)
  rcall('ZADD', K.deadlines, job.deadline_ms, job_id)
  rcall('ZADD', K.waiting, 0, waiting_member(job.pair, ticket, job_id))
  rcall('ZADD', K.waiting_order, ticket, job_id)
end

-- Takes the waiter out of both indexes; returns how long it waited (ms).
local function leave_queue(K, job_id, job, now)
  rcall('ZREM', K.waiting, waiting_member(job.pair, job.ticket, job_id))
  rcall('ZREM', K.waiting_order, job_id)
  local waited = now - (job.waiting_since or now)
  job.ticket = nil
  job.waiting_since = nil
  return waited
end

-- The action a waiter's placement or expiry returns (the shape of a failover action).
local function waiter_action(job_id, job, outcome, waited_ms)
  return {job_id = job_id, session = job.session, index = job.index, tgt = job.tgt,
    old_node = '', cause = 'slot_wait', outcome = outcome, attempt = job.attempt,
    waited_ms = waited_ms}
end

-- Places a waiter on node (usable for it, checked by the caller): attempt 1, as a dispatch.
local function place_waiter(K, C, job_id, job, node, now)
  local waited = leave_queue(K, job_id, job, now)
  reserve_slot(K, node, job_id, job.session, job.index, now)
  job.node = node
  job.attempt = 1
  job.state = 'dispatched'
  job.deadline_ms = now + C.job_timeout_ms
  job.tried = {node}
  write_job(K, job_id, job)
  rcall('ZADD', K.deadlines, job.deadline_ms, job_id)
  local action = waiter_action(job_id, job, 'reassigned', waited)
  action.new_node = node
  action.deadline_ms = job.deadline_ms
  action.payload = rcall('HGET', K.job_payloads, job_id) or nil
  return action
end

-- The wait ran out (its deadline is due): the job fails, as a dispatch that found no slot,
-- or quietly when its session ended meanwhile.
local function expire_waiter(K, C, job_id, job, now)
  local waited = leave_queue(K, job_id, job, now)
  finish_job(K, job_id, job, 'failed', now, C.retention_ms)
  local action = waiter_action(job_id, job, 'failed', waited)
  action.error = session_ended(K, job.session) and 'SESSION_ENDED' or 'ALL_FULL'
  return action
end

-- Selects a node for the pair's oldest waiter and places it there; nil when none is usable.
local function serve_pair(K, C, pair, now)
  local job_id = oldest_waiter(K, pair)
  local job = job_id and read_job(K, job_id)
  if not job or session_ended(K, job.session) then
    return nil -- an ended session's waiter: the sweep ends it, then serves the next
  end
  local node = select_node(K, C, pair, job.session, job.index, {}, {}, job_id, now)
  if not node then
    return nil
  end
  return place_waiter(K, C, job_id, job, node, now)
end

-- node has just freed a slot: the oldest of the first C.wait_lookahead waiters whose pair
-- the node serves takes it (FIFO per pair: once a pair's oldest waiter cannot go to this node,
-- its later ones do not either; a waiter whose session ended is passed over). O(1) when nobody
-- waits (one ZCARD), else O(wait_lookahead), whatever the pairs the node serves. Waiters
-- beyond the look-ahead: the sweep serves them.
local function hand_off_slot(K, C, node, now)
  if rcall('ZCARD', K.waiting_order) == 0 then
    return nil
  end
  local max = rcall('HGET', K.node_slots, node)
  if not max or read_running(K, node) >= tonumber(max) then
    return nil
  end
  local passed = {}
  for _, job_id in ipairs(rcall('ZRANGE', K.waiting_order, 0, C.wait_lookahead - 1)) do
    local job = read_job(K, job_id)
    if job and job.state == 'waiting' and not passed[job.pair]
        and not session_ended(K, job.session) then
      if rcall('ZSCORE', K.pools, pool_member(job.pair, node)) ~= false
          and not was_sent(K, node, job.session, job.index) then
        return place_waiter(K, C, job_id, job, node, now)
      end
      passed[job.pair] = true
    end
  end
  return nil
end

-- The sweep's hand-off: the oldest C.wait_lookahead waiters, each pair's oldest first, go to
-- any usable node (slots freed by failover, a node that joined, a look-ahead that missed);
-- those whose session ended are ended quietly (SESSION_ENDED) instead.
local function serve_waiters(K, C, now, actions)
  local blocked = {}
  for _, job_id in ipairs(rcall('ZRANGE', K.waiting_order, 0, C.wait_lookahead - 1)) do
    local job = read_job(K, job_id)
    if not job or job.state ~= 'waiting' then
      rcall('ZREM', K.waiting_order, job_id)
    elseif session_ended(K, job.session) then
      actions[#actions + 1] = expire_waiter(K, C, job_id, job, now)
    elseif not blocked[job.pair] then
      local node = select_node(K, C, job.pair, job.session, job.index, {}, {}, job_id, now)
      if node then
        actions[#actions + 1] = place_waiter(K, C, job_id, job, node, now)
      else
        blocked[job.pair] = true
      end
    end
  end
end
