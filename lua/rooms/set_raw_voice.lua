-- set_raw_voice: a member turns the raw voice of one other member on or off for itself.
--
-- INVARIANT: only an existing member's record changes, and in it only the preference for that
-- other member; its other fields and preferences are kept. The read and the write are one step,
-- so two overlapping changes of one member are both kept. The room is never re-created; the
-- change refreshes its expiry.
-- Hash tag: the room key alone ({prefix}:room:{<code>}); one key, valid on Redis Cluster.
--
-- KEYS[1] room  HASH `_meta` and one field per member (see create_room.lua)
--
-- ARGV[1] session id of the member whose preference changes
-- ARGV[2] session id of the other member (the sender of the raw voice)
-- ARGV[3] receive: "1" on, "0" off
-- ARGV[4] idle_ms: the room expires this long after its last transition
--
-- Reply: {0 OK} the preference is set
--        {-4 NOT_A_MEMBER} the session is not in the room (or no such room): nothing changed
-- Replay: OK, the same record.

--@include "includes/util.lua"
--@include "includes/room_codes.lua"

local room, session, sender = KEYS[1], ARGV[1], ARGV[2]
local raw = rcall('HGET', room, session)
if not raw or session == '_meta' then
  return reply(CODE.NOT_A_MEMBER)
end
local member = cjson.decode(raw)
if type(member.raw_voice_preferences) ~= 'table' then
  member.raw_voice_preferences = {}
end
member.raw_voice_preferences[sender] = ARGV[3] == '1'
rcall('HSET', room, session, cjson.encode(member))
rcall('PEXPIRE', room, ARGV[4])
return reply(CODE.OK)
