-- Remove a member; delete the room when its last member leaves.
--
-- Invariant: a room never exists without members.
-- Hash tag: the room key alone.
--
-- KEYS[1] room    HASH  (see create_room.lua)
--
-- ARGV[1] session_id
-- ARGV[2] idle_ms
--
-- Returns the number of members left; -1 when the session was not a member (nothing changed).

local room = KEYS[1]
if redis.call("HDEL", room, ARGV[1]) == 0 then
  return -1
end
local left = redis.call("HLEN", room) - 1
if left <= 0 then
  redis.call("DEL", room)
  return 0
end
redis.call("PEXPIRE", room, ARGV[2])
return left
