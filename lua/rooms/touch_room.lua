-- touch_room: activity in a room (a member's audio, a relayed message, a result fanned out)
-- pushes its deadline back. O(1); callers rate-limit it per session
-- (session.room_touch_interval_ms).
--
-- INVARIANT: only a room that exists is touched; a touch never re-creates an expired room.
-- Hash tag: every rooms key is {prefix}:{rooms}:<name> (see create_room.lua).
--
-- KEYS[1] deadlines  ZSET room code -> expires at (ms)
--
-- ARGV[1] room code
-- ARGV[2] idle_ms: the room expires this long after its last activity
-- ARGV[3] now (ms)
--
-- Reply: {0 OK} the deadline is now + idle_ms
--        {-1 ROOM_NOT_FOUND} the room is gone (expired or emptied): nothing changed
-- Replay: OK, the deadline moves to the later now + idle_ms.

--@include "includes/util.lua"
--@include "includes/room_codes.lua"

local deadlines, code = KEYS[1], ARGV[1]
if not rcall('ZSCORE', deadlines, code) then
  return reply(CODE.ROOM_NOT_FOUND)
end
rcall('ZADD', deadlines, 'XX', tonumber(ARGV[3]) + tonumber(ARGV[2]), code)
return reply(CODE.OK)
