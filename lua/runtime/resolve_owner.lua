-- resolve_owner: who owns an id, and is that owner live (one round trip, server clock)?
--
-- INVARIANT: read only. A recorded owner that is not live counts as no owner for routing.
-- Hash tag: every key is {prefix}:{rt}:<name> (one slot).
--
-- KEYS[1] presence  HASH instance -> record json
-- KEYS[2] alive     ZSET instance -> presence expires at (ms)
-- KEYS[3] owners    HASH id -> owner token
--
-- ARGV[1] id
-- ARGV[2] now (ms) or "" for server time
--
-- Reply: {0 OK, {owner?, live}}
-- Replay: read only.

--@include "includes/runtime.lua"

local K = {presence = KEYS[1], alive = KEYS[2], owners = KEYS[3]}
local now = now_from(ARGV[2])
local owner = rcall('HGET', K.owners, ARGV[1])
return reply(OK, {owner = owner or nil, live = owner and is_live(K, owner, now) or false})
