-- create_room: open a room with its first member, unless its code is taken.
--
-- INVARIANT: a room hash exists exactly while its code is in `deadlines`, with its `_meta` field
-- and at least one member; its deadline is its last activity + idle_ms (every rooms script but
-- expire_room pushes it back; expire_room removes a room past it). A taken code is never
-- overwritten.
-- Hash tag: every rooms key is {prefix}:{rooms}:<name> (one slot, valid on Redis Cluster).
--
-- KEYS[1] room       HASH `_meta` -> json {room_id, created_ms}; <session id> -> participant json
-- KEYS[2] deadlines  ZSET room code -> expires at (ms)
--
-- ARGV[1] session id of the creator
-- ARGV[2] participant json of the creator
-- ARGV[3] meta json {room_id, created_ms}
-- ARGV[4] idle_ms: the room expires this long after its last activity
-- ARGV[5] room code (the member of `deadlines`)
-- ARGV[6] now (ms)
--
-- Reply: {0 OK} created
--        {-5 CODE_TAKEN} a room has this code: nothing changed (the caller picks another code)
-- Replay: CODE_TAKEN (the first call created the room).

--@include "includes/util.lua"
--@include "includes/room_codes.lua"

local room, deadlines = KEYS[1], KEYS[2]
if rcall('EXISTS', room) == 1 then
  return reply(CODE.CODE_TAKEN)
end
rcall('HSET', room, '_meta', ARGV[3], ARGV[1], ARGV[2])
rcall('ZADD', deadlines, tonumber(ARGV[6]) + tonumber(ARGV[4]), ARGV[5])
return reply(CODE.OK)
