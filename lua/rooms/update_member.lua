-- Replace a member's participant record (raw-voice preferences); an update is activity.
--
-- Invariant: only an existing member is updated; the room is never re-created by an update.
-- Hash tag: every rooms key is {prefix}:{rooms}:<name> (see create_room.lua).
--
-- KEYS[1] room       HASH  (see create_room.lua)
-- KEYS[2] deadlines  ZSET  room code -> expires at (ms)
--
-- ARGV[1] session_id
-- ARGV[2] participant JSON
-- ARGV[3] idle_ms
-- ARGV[4] room code
-- ARGV[5] now (ms)
--
-- Returns 1 updated; -1 ROOM_NOT_FOUND or not a member.

local room, deadlines = KEYS[1], KEYS[2]
if redis.call("HEXISTS", room, ARGV[1]) == 0 then
  return -1
end
redis.call("HSET", room, ARGV[1], ARGV[2])
redis.call("ZADD", deadlines, "XX", tonumber(ARGV[5]) + tonumber(ARGV[3]), ARGV[4])
return 1
