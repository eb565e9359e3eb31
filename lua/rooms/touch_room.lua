-- Activity in a room (a member's audio, a relayed message, a result fanned out): push its
-- deadline back. O(1); callers rate-limit it per session (session.room_touch_interval_ms).
--
-- Invariant: only a room that exists is touched; a touch never re-creates an expired room.
-- Hash tag: every rooms key is {prefix}:{rooms}:<name> (see create_room.lua).
--
-- KEYS[1] deadlines  ZSET  room code -> expires at (ms)
--
-- ARGV[1] room code
-- ARGV[2] idle_ms
-- ARGV[3] now (ms)
--
-- Returns 1 touched; 0 the room is gone (expired or emptied).

local changed = redis.call("ZADD", KEYS[1], "XX", "CH", tonumber(ARGV[3]) + tonumber(ARGV[2]), ARGV[1])
if changed == 1 then
  return 1
end
return redis.call("ZSCORE", KEYS[1], ARGV[1]) and 1 or 0
