-- dispatch_job: place one job (one utterance, one target language) on a node.
--
-- INVARIANT: at most one job per (session, utterance_index, tgt) (idempotency entry written in
-- the same step as the job); the chosen node is live, serves the pair, has a free slot and was
-- never sent this (session, utterance_index) (the node rejects a second one forever); the slot
-- is reserved, the job written (attempt 1) and its deadline indexed, all at once.
-- Selection: the turn's node (same turn_id and tgt), then the session's node, each only when
-- usable; else the least-loaded usable node of a sampled window of the pair's pool (see
-- select_node). Cost: O(log N) + O(select_sample_size), whatever the pool size and the pairs per
-- node: no pool member is written.
-- Waiting (issue 11): when live nodes serve the pair and could take the job but have no free
-- slot (not when every one is excluded or already had this utterance), the job waits for one
-- (state "waiting", see includes/waiting.lua) up to slot_wait_ms, at most slot_wait_max per
-- pair. A job of a pair that has waiters queues behind them (FIFO), and then the pair's oldest
-- waiter is offered a node (a slot may have freed with no hand-off).
-- Turn state after placement: max_duration continues the turn on the chosen node; manual and
-- silence end it; size and close leave it as it was (docs/protocol.md; the original's §3.6).
-- Hash tag: every key is {prefix}:{domain}:<name> (one slot).
--
-- KEYS[1]  node_slots      HASH node -> max slots, while the node is in the pools
-- KEYS[2]  node_free       SET  nodes of the pools with a free slot
-- KEYS[3]  node_running    HASH node -> running slots
-- KEYS[4]  node_alive      ZSET node -> alive until (ms)
-- KEYS[5]  pools           ZSET lex "<src>:<tgt>\0<node>"
-- KEYS[6]  node_jobs       ZSET lex "<node>\0<job>"
-- KEYS[7]  sent            ZSET "<node>\0<session>\0<index>" -> sent at (ms)
-- KEYS[8]  jobs            HASH job -> json record
-- KEYS[9]  job_payloads    HASH job -> job_assign payload
-- KEYS[10] deadlines       ZSET job -> deadline (ms)
-- KEYS[11] idem            HASH "<session>\0<index>\0<tgt>" -> job
-- KEYS[12] sessions        HASH session -> json {node, turns}
-- KEYS[13] session_expiry  ZSET session -> forgotten at (ms)
-- KEYS[14] waiting         ZSET lex "<pair>\0<ticket>\0<job>" (jobs waiting for a slot)
-- KEYS[15] waiting_order   ZSET job -> ticket (arrival order of every waiter)
-- KEYS[16] wait_seq        STRING ticket counter
--
-- ARGV[1]  job id to use when a new job is created
-- ARGV[2]  session id
-- ARGV[3]  utterance index
-- ARGV[4]  src language
-- ARGV[5]  tgt language
-- ARGV[6]  turn id
-- ARGV[7]  finalize reason: manual | silence | max_duration | size | close
-- ARGV[8]  payload (opaque; kept to re-send on failover)
-- ARGV[9]  exclude: json list of node ids, or ""
-- ARGV[10] now (ms) or ""
-- ARGV[11] job_timeout_ms
-- ARGV[12] select_scan_limit
-- ARGV[13] session_affinity_ttl_ms
-- ARGV[14] select_sample_size
-- ARGV[15] slot_wait_ms: how long a job may wait for a slot
-- ARGV[16] slot_wait_max: most jobs waiting per pair (0: never wait)
-- ARGV[17] pool pair "<src>:<tgt>" to select from, or "" for src:tgt (two-way auto mode selects
--          from lang_a:lang_b whatever the job's target; the job, its idempotency entry and its
--          turn stay keyed by its own tgt, so each target language of one utterance is its own job)
--
-- Reply: {0 OK, {job_id, node, attempt, state, deadline_ms, created = true}}
--        {1 REPLAYED, same fields, created = false} the job exists already: no second slot
--        {3 WAITING, {job_id, node = "", attempt = 0, state = "waiting", deadline_ms = wait
--           expiry, created = true, placed = [actions]}} every node of the pair is busy: the
--           job waits; `placed` (absent when empty) holds an older waiter placed now, in the
--           shape of a failover action (cause "slot_wait"), for the caller to carry out
--        {-3 NO_POOL} no node is in the pair's pool
--        {-4 ALL_FULL} live nodes serve the pair but none has a usable free slot, and the
--           pair already has slot_wait_max jobs waiting (or slot_wait_max is 0)
--        {-5 NO_LIVE_NODE} the pool held only nodes whose liveness lapsed (removed now)
--        (with more than select_scan_limit live members, ALL_FULL means none of the examined)
-- Replay: REPLAYED with the existing job, whatever its state.

--@include "includes/scheduling_codes.lua"
--@include "includes/select_node.lua"
--@include "includes/jobs.lua"
--@include "includes/sessions.lua"
--@include "includes/waiting.lua"

local K = {node_slots = KEYS[1], node_free = KEYS[2], node_running = KEYS[3],
  node_alive = KEYS[4], pools = KEYS[5], node_jobs = KEYS[6], sent = KEYS[7], jobs = KEYS[8],
  job_payloads = KEYS[9], deadlines = KEYS[10], idem = KEYS[11], sessions = KEYS[12],
  session_expiry = KEYS[13], waiting = KEYS[14], waiting_order = KEYS[15], wait_seq = KEYS[16]}
local job_id, session, index = ARGV[1], ARGV[2], ARGV[3]
local src, tgt, turn_id, reason = ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local exclude = {}
if ARGV[9] ~= '' then
  exclude = set_of(cjson.decode(ARGV[9]))
end
local now = now_from(ARGV[10])
local job_timeout_ms = tonumber(ARGV[11])
local C = {scan_limit = tonumber(ARGV[12]), sample_size = tonumber(ARGV[14]),
  job_timeout_ms = job_timeout_ms, wait_ms = tonumber(ARGV[15])}
local wait_max = tonumber(ARGV[16])
local affinity_ttl_ms = tonumber(ARGV[13])

local idem_field = session .. '\0' .. index .. '\0' .. tgt
local existing_id = rcall('HGET', K.idem, idem_field)
if existing_id then
  local job = read_job(K, existing_id)
  if job then
    return reply(CODE.REPLAYED, {job_id = existing_id, node = job.node, attempt = job.attempt,
      state = job.state, deadline_ms = job.deadline_ms, created = false})
  end
end

local pair = pair_of(src, tgt)
if ARGV[17] and ARGV[17] ~= '' then
  pair = ARGV[17]
end
local srec = read_session(K, session)
local preferred = {}
local turn = srec.turns[tgt]
if turn and turn.id == turn_id then
  preferred[#preferred + 1] = turn.node
end
if srec.node then
  preferred[#preferred + 1] = srec.node
end
local queued = waiting_count(K, pair)
local node, code, busy
if queued == 0 then
  node, code, busy = select_node(K, C, pair, session, index, exclude, preferred, job_id, now)
else
  -- FIFO: a pair with waiters gives its next slot to the oldest of them
  code, busy = CODE.ALL_FULL, true
end
if not node and (not busy or queued >= wait_max) then
  return reply(code)
end
if not node then
  enqueue_job(K, C, job_id, {session = session, index = tonumber(index), src = src, tgt = tgt,
    pair = pair, created_ms = now, turn_id = turn_id, reason = reason,
    idem_field = idem_field}, now)
  rcall('HSET', K.job_payloads, job_id, ARGV[8])
  rcall('HSET', K.idem, idem_field, job_id)
  local placed = {}
  if queued > 0 then
    placed[1] = serve_pair(K, C, pair, now)
  end
  return reply(CODE.WAITING, {job_id = job_id, node = '', attempt = 0, state = 'waiting',
    deadline_ms = now + C.wait_ms, created = true, placed = list_or_nil(placed)})
end

reserve_slot(K, node, job_id, session, index, now)
local deadline = now + job_timeout_ms
write_job(K, job_id, {session = session, index = tonumber(index), src = src, tgt = tgt,
  pair = pair, node = node, attempt = 1, state = 'dispatched', deadline_ms = deadline,
  created_ms = now, turn_id = turn_id, reason = reason, tried = {node},
  idem_field = idem_field})
rcall('HSET', K.job_payloads, job_id, ARGV[8])
rcall('ZADD', K.deadlines, deadline, job_id)
rcall('HSET', K.idem, idem_field, job_id)

-- affinity: keep the session's node while it is alive, so one target language does not
-- steal it from another
if not srec.node or not is_alive(K, srec.node, now) then
  srec.node = node
end
if reason == 'max_duration' then
  srec.turns[tgt] = {id = turn_id, node = node}
elseif reason == 'manual' or reason == 'silence' then
  srec.turns[tgt] = nil
end
write_session(K, session, srec)
rcall('ZADD', K.session_expiry, now + affinity_ttl_ms, session)

return reply(CODE.OK, {job_id = job_id, node = node, attempt = 1, state = 'dispatched',
  deadline_ms = deadline, created = true})
