-- resolve_owner: who owns an id, is that owner live, and has the id ended (one round trip)?
--
-- INVARIANT: read only. A recorded owner that is not live counts as no owner for routing, but
-- not as an ended target: only an id its owner released (release_owner's ended mark, still
-- within its time) has ended. An id with no owner and no mark is unknown (never owned, or its
-- mark lapsed).
-- Hash tag: every key is {prefix}:{rt}:<name> (one slot).
--
-- KEYS[1] presence  HASH instance -> record json
-- KEYS[2] alive     ZSET instance -> presence expires at (ms)
-- KEYS[3] owners    HASH id -> owner token
-- KEYS[4] ended     ZSET id -> remembered as ended until (ms)
--
-- ARGV[1] id
-- ARGV[2] now (ms) or "" for server time
--
-- Reply: {0 OK, {owner?, live, ended}}
-- Replay: read only.

--@include "includes/runtime.lua"

local K = {presence = KEYS[1], alive = KEYS[2], owners = KEYS[3], ended = KEYS[4]}
local now = now_from(ARGV[2])
local owner = rcall('HGET', K.owners, ARGV[1])
if owner then
  return reply(OK, {owner = owner, live = is_live(K, owner, now), ended = false})
end
local ended_until = tonumber(rcall('ZSCORE', K.ended, ARGV[1]))
return reply(OK, {live = false, ended = ended_until ~= nil and ended_until > now})
