-- take_entries: the takeover holder reads the next page of a taken-over inbox (unread and pending).
--
-- INVARIANT: the holder fences the inbox first (meta.fenced_by = holder, so the stale replica and
-- any earlier holder can no longer ack or reclaim in it), then reads entries after the cursor
-- with what each carries: handler attempts so far (pending count + "prior") and last failure.
-- Nothing is removed here: the holder acks each entry only once it is re-routed or dead-lettered.
-- Hash tag: every key is {prefix}:{inbox:<instance>@<epoch>}:<name> (one slot).
--
-- KEYS[1] stream    STREAM the inbox
-- KEYS[2] failures  HASH entry id -> last failure json
-- KEYS[3] meta      HASH fenced_by -> token taking the inbox over
--
-- ARGV[1] consumer group
-- ARGV[2] holder token
-- ARGV[3] cursor: read entries strictly after this id ("0-0" from the start)
-- ARGV[4] page size
--
-- Reply: {0 OK, {entries = [{id, fields, deliveries, failure?}...]}}
-- Replay: read only apart from the fence mark.

--@include "includes/runtime.lua"

local K = {stream = KEYS[1], failures = KEYS[2], meta = KEYS[3]}
local group, holder = ARGV[1], ARGV[2]
rcall('HSET', K.meta, 'fenced_by', holder)
local entries = {}
local found = rcall('XRANGE', K.stream, '(' .. ARGV[3], '+', 'COUNT', ARGV[4])
for _, item in ipairs(found) do
  local id = item[1]
  local fields = {}
  for j = 1, #item[2], 2 do
    fields[item[2][j]] = item[2][j + 1]
  end
  local attempts = tonumber(fields.prior) or 0
  local ok, pending = pcall(rcall, 'XPENDING', K.stream, group, id, id, 1)
  if ok and #pending > 0 then
    attempts = attempts + tonumber(pending[1][4])
  end
  entries[#entries + 1] = {id = id, fields = fields, deliveries = attempts,
    failure = rcall('HGET', K.failures, id) or nil}
end
return reply(OK, {entries = list_or_nil(entries)})
