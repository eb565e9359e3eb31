-- join_room: add a member to a room, within the room's size limit; a join is activity.
--
-- INVARIANT: members <= max_members; a session is a member at most once; a join never creates
-- a room. Joining pushes the room's deadline back to now + idle_ms.
-- Hash tag: every rooms key is {prefix}:{rooms}:<name> (see create_room.lua).
--
-- KEYS[1] room       HASH `_meta` and one field per member (see create_room.lua)
-- KEYS[2] deadlines  ZSET room code -> expires at (ms)
--
-- ARGV[1] session id of the member
-- ARGV[2] participant json
-- ARGV[3] max_members
-- ARGV[4] idle_ms: the room expires this long after its last activity
-- ARGV[5] room code
-- ARGV[6] now (ms)
--
-- Reply: {0 OK} joined
--        {-1 ROOM_NOT_FOUND} no room has this code (never created, expired or emptied)
--        {-2 ALREADY_IN_ROOM} the session is a member already: nothing changed
--        {-3 ROOM_FULL} the room has max_members members: nothing changed
-- Replay: ALREADY_IN_ROOM.

--@include "includes/util.lua"
--@include "includes/room_codes.lua"

local room, deadlines = KEYS[1], KEYS[2]
if rcall('HEXISTS', room, '_meta') == 0 then
  return reply(CODE.ROOM_NOT_FOUND)
end
if rcall('HEXISTS', room, ARGV[1]) == 1 then
  return reply(CODE.ALREADY_IN_ROOM)
end
if rcall('HLEN', room) - 1 >= tonumber(ARGV[3]) then
  return reply(CODE.ROOM_FULL)
end
rcall('HSET', room, ARGV[1], ARGV[2])
rcall('ZADD', deadlines, 'XX', tonumber(ARGV[6]) + tonumber(ARGV[4]), ARGV[5])
return reply(CODE.OK)
