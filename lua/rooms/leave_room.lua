-- leave_room: remove a member; the room goes with its last member.
--
-- INVARIANT: a room never exists without members; a deleted room leaves `deadlines` with it.
-- Leaving pushes back the deadline of a room that still has members.
-- Hash tag: every rooms key is {prefix}:{rooms}:<name> (see create_room.lua).
--
-- KEYS[1] room       HASH `_meta` and one field per member (see create_room.lua)
-- KEYS[2] deadlines  ZSET room code -> expires at (ms)
--
-- ARGV[1] session id of the member
-- ARGV[2] idle_ms: the room expires this long after its last activity
-- ARGV[3] room code
-- ARGV[4] now (ms)
--
-- Reply: {0 OK, {left}} members left (0: the room is deleted)
--        {-4 NOT_A_MEMBER} the session is not in the room (or no such room): nothing changed
-- Replay: NOT_A_MEMBER.

--@include "includes/util.lua"
--@include "includes/room_codes.lua"

local room, deadlines = KEYS[1], KEYS[2]
if ARGV[1] == '_meta' or rcall('HDEL', room, ARGV[1]) == 0 then
  return reply(CODE.NOT_A_MEMBER)
end
local left = rcall('HLEN', room) - 1
if left <= 0 then
  rcall('DEL', room)
  rcall('ZREM', deadlines, ARGV[3])
  return reply(CODE.OK, {left = 0})
end
rcall('ZADD', deadlines, 'XX', tonumber(ARGV[4]) + tonumber(ARGV[2]), ARGV[3])
return reply(CODE.OK, {left = left})
