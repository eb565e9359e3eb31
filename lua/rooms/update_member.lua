-- Replace a member's participant record (raw-voice preferences) and refresh the room's expiry.
--
-- Invariant: only an existing member is updated; the room is never re-created by an update.
-- Hash tag: the room key alone.
--
-- KEYS[1] room    HASH  (see create_room.lua)
--
-- ARGV[1] session_id
-- ARGV[2] participant JSON
-- ARGV[3] idle_ms
--
-- Returns 1 updated; -1 ROOM_NOT_FOUND or not a member.

local room = KEYS[1]
if redis.call("HEXISTS", room, ARGV[1]) == 0 then
  return -1
end
redis.call("HSET", room, ARGV[1], ARGV[2])
redis.call("PEXPIRE", room, ARGV[3])
return 1
