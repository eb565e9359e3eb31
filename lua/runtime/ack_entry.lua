-- ack_entry: entries were handled (or re-routed, or dead-lettered): acknowledge and delete them.
--
-- INVARIANT: fencing. Once a replica takes an inbox over (meta.fenced_by), only that holder
-- may acknowledge entries in it: the stale replica whose inbox it was cannot ack, so an entry is
-- removed only by whoever is responsible for it now. Acked entries are deleted at once (the
-- stream holds only unread and pending work) and their failure records go with them.
-- Hash tag: every key is {prefix}:{inbox:<instance>@<epoch>}:<name> (one slot).
--
-- KEYS[1] stream    STREAM the inbox
-- KEYS[2] failures  HASH entry id -> last failure json
-- KEYS[3] meta      HASH fenced_by -> token taking the inbox over
--
-- ARGV[1] consumer group
-- ARGV[2] acking token (instance@epoch)
-- ARGV[3..] entry ids
--
-- Reply: {0 OK, {acked = n}} | {-1 FENCED}
-- Replay: acking an acked (deleted) entry changes nothing.

--@include "includes/runtime.lua"

local K = {stream = KEYS[1], failures = KEYS[2], meta = KEYS[3]}
local group, token = ARGV[1], ARGV[2]
local fenced_by = rcall('HGET', K.meta, 'fenced_by')
if fenced_by and fenced_by ~= token then
  return reply(FENCED)
end
local acked = 0
for i = 3, #ARGV do
  acked = acked + rcall('XACK', K.stream, group, ARGV[i])
  rcall('XDEL', K.stream, ARGV[i])
  rcall('HDEL', K.failures, ARGV[i])
end
return reply(OK, {acked = acked})
