-- Create a room with its first member, unless the code is taken.
--
-- Invariant: a room hash exists only with its `_meta` field and at least one member; it expires
-- after idle_ms without activity (every script here refreshes the expiry).
-- Hash tag: the room key alone ({prefix}:room:{<code>}); one key, valid on Redis Cluster.
--
-- KEYS[1] room    HASH  `_meta` -> JSON {room_id, created_ms}; <session_id> -> participant JSON
--
-- ARGV[1] session_id
-- ARGV[2] participant JSON
-- ARGV[3] meta JSON
-- ARGV[4] idle_ms   expiry of the room after its last activity
--
-- Returns 1 created; 0 the code is taken (caller picks another code).

local room = KEYS[1]
if redis.call("EXISTS", room) == 1 then
  return 0
end
redis.call("HSET", room, "_meta", ARGV[3], ARGV[1], ARGV[2])
redis.call("PEXPIRE", room, ARGV[4])
return 1
