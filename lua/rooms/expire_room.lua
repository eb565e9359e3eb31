-- Expire one room whose deadline passed: delete it and return its members, who are each sent
-- `room_expired`. Every replica's sweep reads the due codes and calls this per code; it checks
-- the deadline again, so a room touched meanwhile stays, and one replica expires each room once.
--
-- Invariant: a room is removed with its `deadlines` entry in the same step, only past its
-- deadline.
-- Hash tag: every rooms key is {prefix}:{rooms}:<name> (see create_room.lua).
--
-- KEYS[1] room       HASH  (see create_room.lua)
-- KEYS[2] deadlines  ZSET  room code -> expires at (ms)
--
-- ARGV[1] room code
-- ARGV[2] now (ms)
--
-- Returns the members' session ids (the room is gone); an empty list: not due (touched since,
-- or already expired by another replica), nothing changed.

local room, deadlines = KEYS[1], KEYS[2]
local deadline = redis.call("ZSCORE", deadlines, ARGV[1])
if not deadline or tonumber(deadline) > tonumber(ARGV[2]) then
  return {}
end
local members = {}
for _, field in ipairs(redis.call("HKEYS", room)) do
  if field ~= "_meta" then
    members[#members + 1] = field
  end
end
redis.call("DEL", room)
redis.call("ZREM", deadlines, ARGV[1])
return members
