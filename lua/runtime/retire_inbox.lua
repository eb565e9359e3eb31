-- retire_inbox: the takeover holder deletes an inbox it has emptied.
--
-- INVARIANT: an inbox is deleted only when no entry is left (every entry was acked after being
-- re-routed or dead-lettered), checked and done in one step: a late XADD (senders use
-- NOMKSTREAM, so they never recreate a retired inbox) is either seen here (MORE) or refused.
-- Hash tag: every key is {prefix}:{inbox:<instance>@<epoch>}:<name> (one slot).
--
-- KEYS[1] stream    STREAM the inbox
-- KEYS[2] failures  HASH entry id -> last failure json
-- KEYS[3] meta      HASH fenced_by -> token taking the inbox over
--
-- ARGV[1] holder token
--
-- Reply: {0 OK} | {2 MORE, {left = n}} | {-1 FENCED} (another holder fenced it since)
-- Replay: retiring a retired inbox replies OK.

--@include "includes/runtime.lua"

local K = {stream = KEYS[1], failures = KEYS[2], meta = KEYS[3]}
local fenced_by = rcall('HGET', K.meta, 'fenced_by')
if fenced_by and fenced_by ~= ARGV[1] then
  return reply(FENCED)
end
local left = rcall('XLEN', K.stream)
if left > 0 then
  return reply(MORE, {left = left})
end
rcall('DEL', K.stream, K.failures, K.meta)
return reply(OK)
