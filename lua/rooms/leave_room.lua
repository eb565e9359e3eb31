-- leave_room: remove a member; the room goes with its last member.
--
-- INVARIANT: a room never exists without members. Leaving refreshes the expiry of a room that
-- still has members.
-- Hash tag: the room key alone ({prefix}:room:{<code>}); one key, valid on Redis Cluster.
--
-- KEYS[1] room  HASH `_meta` and one field per member (see create_room.lua)
--
-- ARGV[1] session id of the member
-- ARGV[2] idle_ms: the room expires this long after its last transition
--
-- Reply: {0 OK, {left}} members left (0: the room is deleted)
--        {-4 NOT_A_MEMBER} the session is not in the room (or no such room): nothing changed
-- Replay: NOT_A_MEMBER.

--@include "includes/util.lua"
--@include "includes/room_codes.lua"

local room = KEYS[1]
if rcall('HDEL', room, ARGV[1]) == 0 then
  return reply(CODE.NOT_A_MEMBER)
end
local left = rcall('HLEN', room) - 1
if left <= 0 then
  rcall('DEL', room)
  return reply(CODE.OK, {left = 0})
end
rcall('PEXPIRE', room, ARGV[2])
return reply(CODE.OK, {left = left})
