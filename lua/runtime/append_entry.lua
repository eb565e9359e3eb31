-- append_entry: add one envelope to a replica's inbox, within the inbox's bound.
--
-- INVARIANT: an inbox never holds more than ARGV[1] entries (unread plus pending: acked entries
-- are deleted at once), and nothing already in it is ever trimmed away: a full inbox refuses
-- the new entry (FULL) and the sender dead-letters it with reason inbox_full, so the bound
-- never loses a message silently (XADD MAXLEN would drop the oldest, pending ones included).
-- A retired inbox is never recreated (UNKNOWN_INBOX): the sender re-resolves the owner instead.
-- Hash tag: every key is {prefix}:{inbox:<instance>@<epoch>}:<name> (one slot).
--
-- KEYS[1] stream  STREAM the inbox
--
-- ARGV[1] most entries the inbox may hold
-- ARGV[2..] field, value, field, value ... of the entry
--
-- Reply: {0 OK, {id}} | {-4 UNKNOWN_INBOX} | {-6 FULL, {length}}
-- Replay: each call adds a new entry; receivers deduplicate by the envelope's message id.

--@include "includes/runtime.lua"

local K = {stream = KEYS[1]}
if rcall('EXISTS', K.stream) == 0 then
  return reply(UNKNOWN_INBOX)
end
local length = rcall('XLEN', K.stream)
if length >= tonumber(ARGV[1]) then
  return reply(FULL, {length = length})
end
local id = rcall('XADD', K.stream, '*', unpack(ARGV, 2))
return reply(OK, {id = id})
