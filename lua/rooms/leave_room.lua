-- Remove a member; delete the room when its last member leaves.
--
-- Invariant: a room never exists without members; a deleted room leaves `deadlines` with it.
-- Hash tag: every rooms key is {prefix}:{rooms}:<name> (see create_room.lua).
--
-- KEYS[1] room       HASH  (see create_room.lua)
-- KEYS[2] deadlines  ZSET  room code -> expires at (ms)
--
-- ARGV[1] session_id
-- ARGV[2] idle_ms
-- ARGV[3] room code
-- ARGV[4] now (ms)
--
-- Returns the number of members left; -1 when the session was not a member (nothing changed).

local room, deadlines = KEYS[1], KEYS[2]
if redis.call("HDEL", room, ARGV[1]) == 0 then
  return -1
end
local left = redis.call("HLEN", room) - 1
if left <= 0 then
  redis.call("DEL", room)
  redis.call("ZREM", deadlines, ARGV[3])
  return 0
end
redis.call("ZADD", deadlines, "XX", tonumber(ARGV[4]) + tonumber(ARGV[2]), ARGV[3])
return left
