-- end_session: the session closed; forget its node and turn affinity.
--
-- INVARIANT: a later session with the same id starts without affinity. Active jobs of the
-- session are untouched (they complete or time out).
-- Hash tag: every key is {prefix}:{domain}:<name> (one slot).
--
-- KEYS[1] sessions        HASH session -> json {node, turns}
-- KEYS[2] session_expiry  ZSET session -> forgotten at (ms)
--
-- ARGV[1] session id
--
-- Reply: {0 OK, {existed}}
-- Replay: {0 OK, {existed = false}}.

--@include "includes/scheduling_codes.lua"

local session = ARGV[1]
local existed = redis.call('HDEL', KEYS[1], session) == 1
redis.call('ZREM', KEYS[2], session)
return {CODE.OK, cjson.encode({existed = existed})}
