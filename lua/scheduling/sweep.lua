-- sweep: timeouts, dead nodes and expired records; one call per replica tick.
--
-- INVARIANT: each due deadline and each dead node is handled by exactly one call, since the
-- claim (moving or removing the deadline, removing the node) happens in the same script as the
-- handling. Timed-out jobs release their old slot and go to another node (attempt + 1, never a
-- node tried before) or fail after max_attempts. Nodes whose liveness lapsed go offline and
-- their jobs fail over at once. Expired finished jobs (with their idempotency entries and
-- payloads), forgotten sessions and old `sent` marks are removed. Each part handles at most
-- sweep_batch entries, and dead nodes stop once their pool members removed reach
-- sweep_pool_members (one node at least: a node leaves its pools in one step), so one call
-- blocks Redis for a bounded time even when many 10,000-pair nodes die at once; `more` says a
-- part was cut short (call again without waiting).
-- Waiting jobs (issue 11): a waiter whose wait is due fails (NO_AVAILABLE_NODE, cause
-- "slot_wait"); then the oldest slot_wait_lookahead waiters, each pair's oldest first, are
-- offered any usable node (slots that no completion handed off: failover, a node that joined).
-- Stalls (issue 12): sweep_clock holds the server's clock at the last sweep. No sweep for stall_ms means
-- Redis was away (restarted, paused) or no replica ran: deadlines and node liveness that lapsed
-- in that gap lapsed only because nothing could answer, so they move to now + stall_grace_ms
-- (results queued on the replicas complete meanwhile) instead of failing over answered work.
-- At most sweep_batch of each per call; a call cut short returns `more` and keeps the clock.
-- Hash tag: every key is {prefix}:{domain}:<name> (one slot).
--
-- KEYS[1]  nodes           HASH node -> json record {gen, digest, max, hardware, ...}
-- KEYS[2]  node_langs      HASH node -> json {asr, semantic, tts}
-- KEYS[3]  node_slots      HASH node -> max slots, while the node is in the pools
-- KEYS[4]  node_free       SET  nodes of the pools with a free slot
-- KEYS[5]  node_running    HASH node -> running slots
-- KEYS[6]  node_alive      ZSET node -> alive until (ms)
-- KEYS[7]  pools           ZSET lex "<src>:<tgt>\0<node>"
-- KEYS[8]  node_jobs       ZSET lex "<node>\0<job>"
-- KEYS[9]  sent            ZSET "<node>\0<session>\0<index>" -> sent at (ms)
-- KEYS[10] jobs            HASH job -> json record
-- KEYS[11] job_payloads    HASH job -> job_assign payload
-- KEYS[12] deadlines       ZSET job -> deadline (ms)
-- KEYS[13] jobs_expiry     ZSET job -> record removed at (ms)
-- KEYS[14] idem            HASH "<session>\0<index>\0<tgt>" -> job
-- KEYS[15] sessions        HASH session -> json {node, turns}
-- KEYS[16] session_expiry  ZSET session -> forgotten at (ms)
-- KEYS[17] waiting         ZSET lex "<pair>\0<ticket>\0<job>" (jobs waiting for a slot)
-- KEYS[18] waiting_order   ZSET job -> ticket (arrival order of every waiter)
-- KEYS[19] sweep_clock     STRING the server's clock at the last sweep (ms)
--
-- ARGV[1] now (ms) or ""
-- ARGV[2] max_attempts
-- ARGV[3] select_scan_limit
-- ARGV[4] job_timeout_ms
-- ARGV[5] job_retention_ms
-- ARGV[6] sweep_batch
-- ARGV[7] sent_retention_ms
-- ARGV[8] select_sample_size
-- ARGV[9] sweep_pool_members
-- ARGV[10] slot_wait_lookahead
-- ARGV[11] stall_ms
-- ARGV[12] stall_grace_ms
--
-- Reply: {0 OK, {actions = [failover actions, as take_node_offline], offline = [node ids],
--                 removed_jobs, removed_sessions, removed_sent, more, waiting = jobs waiting
--                 for a slot after this call, stalled_jobs, stalled_nodes = deadlines and
--                 node liveness moved past a stall}}
-- Replay: a second call right after finds nothing due and returns no actions.

--@include "includes/scheduling_codes.lua"
--@include "includes/take_offline.lua"
--@include "includes/waiting.lua"

local K = {nodes = KEYS[1], node_langs = KEYS[2], node_slots = KEYS[3], node_free = KEYS[4],
  node_running = KEYS[5], node_alive = KEYS[6], pools = KEYS[7], node_jobs = KEYS[8],
  sent = KEYS[9], jobs = KEYS[10], job_payloads = KEYS[11], deadlines = KEYS[12],
  jobs_expiry = KEYS[13], idem = KEYS[14], sessions = KEYS[15], session_expiry = KEYS[16],
  waiting = KEYS[17], waiting_order = KEYS[18], sweep_clock = KEYS[19]}
local now = now_from(ARGV[1])
local C = {max_attempts = tonumber(ARGV[2]), scan_limit = tonumber(ARGV[3]),
  job_timeout_ms = tonumber(ARGV[4]), retention_ms = tonumber(ARGV[5]),
  sample_size = tonumber(ARGV[8]), wait_lookahead = tonumber(ARGV[10])}
local batch = tonumber(ARGV[6])
local sent_retention_ms = tonumber(ARGV[7])
local member_budget = tonumber(ARGV[9])
local actions, offline = {}, {}
local more = false

-- 0. a stall: what lapsed in the gap since the last sweep gets stall_grace_ms from now. The gap
-- is measured on the server's clock (a caller's `now` may be a test's clock that jumps).
local clock = now_from('')
local last = tonumber(rcall('GET', K.sweep_clock))
local stalled_jobs, stalled_nodes = {}, {}
if last and clock - last > tonumber(ARGV[11]) then
  local since, until_ms = now - (clock - last), now + tonumber(ARGV[12])
  stalled_jobs = rcall('ZRANGEBYSCORE', K.deadlines, '(' .. since, now, 'LIMIT', 0, batch)
  for _, job_id in ipairs(stalled_jobs) do
    local job = read_job(K, job_id)
    if job then
      job.deadline_ms = until_ms
      write_job(K, job_id, job)
    end
    rcall('ZADD', K.deadlines, until_ms, job_id)
  end
  stalled_nodes = rcall('ZRANGEBYSCORE', K.node_alive, '(' .. since, now, 'LIMIT', 0, batch)
  for _, node in ipairs(stalled_nodes) do
    rcall('ZADD', K.node_alive, 'XX', until_ms, node)
  end
  if #stalled_jobs == batch or #stalled_nodes == batch then
    return reply(CODE.OK, {removed_jobs = 0, removed_sessions = 0, removed_sent = 0,
      more = true, stalled_jobs = #stalled_jobs, stalled_nodes = #stalled_nodes,
      waiting = rcall('ZCARD', K.waiting_order)})
  end
end
rcall('SET', K.sweep_clock, clock)

-- 1. dead nodes first: their jobs fail over as "node_offline" rather than one by one later
local dead = rcall('ZRANGEBYSCORE', K.node_alive, '-inf', '(' .. now, 'LIMIT', 0, batch)
more = more or #dead == batch
local members_removed = 0
for _, node in ipairs(dead) do
  if members_removed >= member_budget then
    more = true
    break
  end
  members_removed = members_removed + take_offline(K, C, node, now, actions)
  offline[#offline + 1] = node
end

-- 2. due deadlines
local due = rcall('ZRANGEBYSCORE', K.deadlines, '-inf', now, 'LIMIT', 0, batch)
more = more or #due == batch
for _, job_id in ipairs(due) do
  local job = read_job(K, job_id)
  if job and ACTIVE[job.state] then
    actions[#actions + 1] = failover_job(K, C, job_id, job, 'timeout', now)
  elseif job and job.state == 'waiting' then
    actions[#actions + 1] = expire_waiter(K, C, job_id, job, now)
  else
    rcall('ZREM', K.deadlines, job_id)
  end
end

-- 3. expired finished records, with their idempotency entries
local expired = rcall('ZRANGEBYSCORE', K.jobs_expiry, '-inf', now, 'LIMIT', 0, batch)
more = more or #expired == batch
for _, job_id in ipairs(expired) do
  local job = read_job(K, job_id)
  if job and rcall('HGET', K.idem, job.idem_field) == job_id then
    rcall('HDEL', K.idem, job.idem_field)
  end
  rcall('HDEL', K.jobs, job_id)
  rcall('HDEL', K.job_payloads, job_id)
  rcall('ZREM', K.jobs_expiry, job_id)
end

-- 4. forgotten sessions
local sessions = rcall('ZRANGEBYSCORE', K.session_expiry, '-inf', now, 'LIMIT', 0, batch)
more = more or #sessions == batch
for _, session in ipairs(sessions) do
  rcall('HDEL', K.sessions, session)
  rcall('ZREM', K.session_expiry, session)
end

-- 5. old "sent" marks (long after any job of that utterance can still be active)
local old_sent = rcall('ZRANGEBYSCORE', K.sent, '-inf', now - sent_retention_ms, 'LIMIT', 0,
  batch)
more = more or #old_sent == batch
call_chunked('ZREM', K.sent, old_sent, 1000)

-- 6. waiters a slot is free for
serve_waiters(K, C, now, actions)

return reply(CODE.OK, {actions = list_or_nil(actions), offline = list_or_nil(offline),
  removed_jobs = #expired, removed_sessions = #sessions, removed_sent = #old_sent, more = more,
  waiting = rcall('ZCARD', K.waiting_order), stalled_jobs = #stalled_jobs,
  stalled_nodes = #stalled_nodes})
