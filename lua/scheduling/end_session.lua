-- end_session: the session closed; forget its node and turn affinity, and mark it ended so its
-- jobs still on nodes are not failed over to fresh nodes (the sweep fails them quietly at their
-- deadline, with job_cancel to the node; see includes/failover_job.lua).
--
-- INVARIANT: an ended session has no affinity; its record is only the `ended` mark, kept until
-- every attempt of its jobs is past (keep_ms), then swept like any session record.
-- Hash tag: every key is {prefix}:{domain}:<name> (one slot).
--
-- KEYS[1] sessions        HASH session -> json {node, turns} or {ended = true}
-- KEYS[2] session_expiry  ZSET session -> forgotten at (ms)
--
-- ARGV[1] session id
-- ARGV[2] now (ms) or ""
-- ARGV[3] keep_ms: how long the ended mark outlives the session (job_timeout_ms x max_attempts)
--
-- Reply: {0 OK, {existed}}  existed: the session had affinity (it had dispatched)
-- Replay: {0 OK, {existed = false}}; the mark's expiry moves to now + keep_ms.

--@include "includes/util.lua"

--@include "includes/scheduling_codes.lua"

local session = ARGV[1]
local now = now_from(ARGV[2])
local raw = redis.call('HGET', KEYS[1], session)
local existed = raw ~= false and raw ~= nil and cjson.decode(raw).ended ~= true
redis.call('HSET', KEYS[1], session, cjson.encode({ended = true}))
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), session)
return {CODE.OK, cjson.encode({existed = existed})}
