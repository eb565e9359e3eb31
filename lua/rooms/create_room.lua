-- Create a room with its first member, unless the code is taken.
--
-- Invariant: a room hash exists exactly while its code is in `deadlines`, with its `_meta` field
-- and at least one member; its deadline is the last activity + idle_ms (every script here but
-- expire_rooms pushes it back; expire_rooms removes rooms past it).
-- Hash tag: every rooms key is {prefix}:{rooms}:<name> (one slot, valid on Redis Cluster).
--
-- KEYS[1] room       HASH  `_meta` -> JSON {room_id, created_ms}; <session_id> -> participant JSON
-- KEYS[2] deadlines  ZSET  room code -> expires at (ms)
--
-- ARGV[1] session_id
-- ARGV[2] participant JSON
-- ARGV[3] meta JSON
-- ARGV[4] idle_ms   expiry of the room after its last activity
-- ARGV[5] room code (the member of `deadlines`)
-- ARGV[6] now (ms)
--
-- Returns 1 created; 0 the code is taken (caller picks another code).

local room, deadlines = KEYS[1], KEYS[2]
if redis.call("EXISTS", room) == 1 then
  return 0
end
redis.call("HSET", room, "_meta", ARGV[3], ARGV[1], ARGV[2])
redis.call("ZADD", deadlines, tonumber(ARGV[6]) + tonumber(ARGV[4]), ARGV[5])
return 1
