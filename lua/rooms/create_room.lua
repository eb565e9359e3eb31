-- create_room: open a room with its first member, unless its code is taken.
--
-- INVARIANT: a room hash exists only with its `_meta` field and at least one member, and it
-- expires idle_ms after its last transition (every rooms script refreshes the expiry). A taken
-- code is never overwritten.
-- Hash tag: the room key alone ({prefix}:room:{<code>}); one key, valid on Redis Cluster.
--
-- KEYS[1] room  HASH `_meta` -> json {room_id, created_ms}; <session id> -> participant json
--
-- ARGV[1] session id of the creator
-- ARGV[2] participant json of the creator
-- ARGV[3] meta json {room_id, created_ms}
-- ARGV[4] idle_ms: the room expires this long after its last transition
--
-- Reply: {0 OK} created
--        {-5 CODE_TAKEN} a room has this code: nothing changed (the caller picks another code)
-- Replay: CODE_TAKEN (the first call created the room).

--@include "includes/util.lua"
--@include "includes/room_codes.lua"

local room = KEYS[1]
if rcall('EXISTS', room) == 1 then
  return reply(CODE.CODE_TAKEN)
end
rcall('HSET', room, '_meta', ARGV[3], ARGV[1], ARGV[2])
rcall('PEXPIRE', room, ARGV[4])
return reply(CODE.OK)
