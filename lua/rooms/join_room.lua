-- Add a member to a room, within the room's size limit; a join is activity.
--
-- Invariant: members <= max_members; a session appears at most once; the room must exist.
-- Hash tag: every rooms key is {prefix}:{rooms}:<name> (see create_room.lua).
--
-- KEYS[1] room       HASH  `_meta` and one field per member (see create_room.lua)
-- KEYS[2] deadlines  ZSET  room code -> expires at (ms)
--
-- ARGV[1] session_id
-- ARGV[2] participant JSON
-- ARGV[3] max_members
-- ARGV[4] idle_ms
-- ARGV[5] room code
-- ARGV[6] now (ms)
--
-- Returns 1 joined; -1 ROOM_NOT_FOUND; -2 ALREADY_IN_ROOM; -3 ROOM_FULL.
-- Replay: a second join of the same session answers -2 and changes nothing.

local room, deadlines = KEYS[1], KEYS[2]
if redis.call("HEXISTS", room, "_meta") == 0 then
  return -1
end
if redis.call("HEXISTS", room, ARGV[1]) == 1 then
  return -2
end
if redis.call("HLEN", room) - 1 >= tonumber(ARGV[3]) then
  return -3
end
redis.call("HSET", room, ARGV[1], ARGV[2])
redis.call("ZADD", deadlines, "XX", tonumber(ARGV[6]) + tonumber(ARGV[4]), ARGV[5])
return 1
