-- expire_room: delete one room whose deadline passed and return its members, who are each sent
-- `room_expired`. Every replica's sweep reads the due codes and calls this per code; the
-- deadline is checked again here, so a room touched meanwhile stays and one replica expires
-- each room once.
--
-- INVARIANT: a room is removed with its `deadlines` entry in the same step, only past its
-- deadline.
-- Hash tag: every rooms key is {prefix}:{rooms}:<name> (see create_room.lua).
--
-- KEYS[1] room       HASH `_meta` and one field per member (see create_room.lua)
-- KEYS[2] deadlines  ZSET room code -> expires at (ms)
--
-- ARGV[1] room code
-- ARGV[2] now (ms)
--
-- Reply: {0 OK, {members}} expired: the members' session ids (dropped when none)
--        {1 NOT_DUE} the room was touched since it was read: nothing changed
--        {-1 ROOM_NOT_FOUND} no room has this code (expired by another replica, or emptied)
-- Replay: ROOM_NOT_FOUND.

--@include "includes/util.lua"
--@include "includes/room_codes.lua"

local room, deadlines, code = KEYS[1], KEYS[2], ARGV[1]
local deadline = rcall('ZSCORE', deadlines, code)
if not deadline then
  return reply(CODE.ROOM_NOT_FOUND)
end
if tonumber(deadline) > tonumber(ARGV[2]) then
  return reply(CODE.NOT_DUE)
end
-- HGETALL, not HKEYS: the minimum ACL (docs/security.md) grants it; a room is small
local members = {}
local fields = rcall('HGETALL', room)
for i = 1, #fields, 2 do
  if fields[i] ~= '_meta' then
    members[#members + 1] = fields[i]
  end
end
rcall('DEL', room)
rcall('ZREM', deadlines, code)
if #members == 0 then
  return reply(CODE.OK, {})
end
return reply(CODE.OK, {members = members})
