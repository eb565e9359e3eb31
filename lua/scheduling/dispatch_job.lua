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
-- Turn state after placement: max_duration continues the turn on the chosen node; manual and
-- silence end it; size and close leave it as it was (original-protocol 3.6).
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
-- ARGV[15] pool pair "<src>:<tgt>" to select from, or "" for src:tgt (two-way auto mode selects
--          from lang_a:lang_b whatever the job's target; the job, its idempotency entry and its
--          turn stay keyed by its own tgt, so each target language of one utterance is its own job)
--
-- Reply: {0 OK, {job_id, node, attempt, state, deadline_ms, created = true}}
--        {1 REPLAYED, same fields, created = false} the job exists already: no second slot
--        {-3 NO_POOL} no node is in the pair's pool
--        {-4 ALL_FULL} live nodes serve the pair but none has a usable free slot
--        {-5 NO_LIVE_NODE} the pool held only nodes whose liveness lapsed (removed now)
--        (with more than select_scan_limit live members, ALL_FULL means none of the examined)
-- Replay: REPLAYED with the existing job, whatever its state.

--@include "includes/scheduling_codes.lua"
--@include "includes/select_node.lua"
--@include "includes/jobs.lua"
--@include "includes/sessions.lua"

local K = {node_slots = KEYS[1], node_free = KEYS[2], node_running = KEYS[3],
  node_alive = KEYS[4], pools = KEYS[5], node_jobs = KEYS[6], sent = KEYS[7], jobs = KEYS[8],
  job_payloads = KEYS[9], deadlines = KEYS[10], idem = KEYS[11], sessions = KEYS[12],
  session_expiry = KEYS[13]}
local job_id, session, index = ARGV[1], ARGV[2], ARGV[3]
local src, tgt, turn_id, reason = ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local exclude = {}
if ARGV[9] ~= '' then
  exclude = set_of(cjson.decode(ARGV[9]))
end
local now = now_from(ARGV[10])
local job_timeout_ms = tonumber(ARGV[11])
local C = {scan_limit = tonumber(ARGV[12]), sample_size = tonumber(ARGV[14])}
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
if ARGV[15] and ARGV[15] ~= '' then
  pair = ARGV[15]
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
local node, code = select_node(K, C, pair, session, index, exclude, preferred, job_id, now)
if not node then
  return reply(code)
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
