-- join_room: add a member to a room, within the room's size limit.
--
-- INVARIANT: members <= max_members; a session is a member at most once; a join never creates
-- a room. Joining refreshes the room's expiry.
-- Hash tag: the room key alone ({prefix}:room:{<code>}); one key, valid on Redis Cluster.
--
-- KEYS[1] room  HASH `_meta` and one field per member (see create_room.lua)
--
-- ARGV[1] session id of the member
-- ARGV[2] participant json
-- ARGV[3] max_members
-- ARGV[4] idle_ms: the room expires this long after its last transition
--
-- Reply: {0 OK} joined
--        {-1 ROOM_NOT_FOUND} no room has this code (never created, expired or emptied)
--        {-2 ALREADY_IN_ROOM} the session is a member already: nothing changed
--        {-3 ROOM_FULL} the room has max_members members: nothing changed
-- Replay: ALREADY_IN_ROOM.

--@include "includes/util.lua"
--@include "includes/room_codes.lua"

local room = KEYS[1]
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
rcall('PEXPIRE', room, ARGV[4])
return reply(CODE.OK)
