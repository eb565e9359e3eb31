-- reclaim_entries: one page of this replica's stuck entries: retry them, or hand them to the DLQ.
--
-- INVARIANT: the delivery count is the number of handler attempts, never inflated by the
-- reclaim itself: candidates are found with XAUTOCLAIM JUSTID (no count bump), entries the
-- caller is still handling (ARGV[7..]) are skipped, and only an entry given back to the handler
-- is XCLAIMed (count + 1). An entry whose attempts (plus those before a takeover, field
-- "prior") reached the cap is returned as dead and not claimed: the caller dead-letters it,
-- then acks it. The caller follows the returned cursor ("0-0": the pass is complete).
-- Hash tag: every key is {prefix}:{inbox:<instance>@<epoch>}:<name> (one slot).
--
-- KEYS[1] stream    STREAM the inbox
-- KEYS[2] failures  HASH entry id -> last failure json
-- KEYS[3] meta      HASH fenced_by -> token taking the inbox over
--
-- ARGV[1] consumer group
-- ARGV[2] consumer (our token)
-- ARGV[3] min idle (ms)
-- ARGV[4] cursor (entry id; "0-0" starts a pass)
-- ARGV[5] page size
-- ARGV[6] max deliveries
-- ARGV[7..] entry ids in flight here (skipped)
--
-- Reply: {0 OK, {cursor, retry = [entry...], dead = [entry...]}} | {-1 FENCED}
--        entry = {id, fields = {env, prior?, failure?}, deliveries, failure?}
-- Replay: a second call sees the retried entries as freshly delivered (not idle) and skips them.

--@include "includes/runtime.lua"

local K = {stream = KEYS[1], failures = KEYS[2], meta = KEYS[3]}
local group, consumer = ARGV[1], ARGV[2]
local fenced_by = rcall('HGET', K.meta, 'fenced_by')
if fenced_by and fenced_by ~= consumer then
  return reply(FENCED)
end
local max_deliveries = tonumber(ARGV[6])
local skip = {}
for i = 7, #ARGV do
  skip[ARGV[i]] = true
end
local page = rcall('XAUTOCLAIM', K.stream, group, consumer, ARGV[3], ARGV[4], 'COUNT', ARGV[5],
  'JUSTID')
local retry, dead = {}, {}
for _, id in ipairs(page[2]) do
  if not skip[id] then
    local found = rcall('XRANGE', K.stream, id, id)
    if #found == 0 then
      rcall('XACK', K.stream, group, id)
      rcall('HDEL', K.failures, id)
    else
      local fields = {}
      local flat = found[1][2]
      for j = 1, #flat, 2 do
        fields[flat[j]] = flat[j + 1]
      end
      local pending = rcall('XPENDING', K.stream, group, id, id, 1)
      local attempts = tonumber(pending[1][4]) + (tonumber(fields.prior) or 0)
      local entry = {id = id, fields = fields, failure = rcall('HGET', K.failures, id) or nil}
      if attempts >= max_deliveries then
        entry.deliveries = attempts
        dead[#dead + 1] = entry
      else
        rcall('XCLAIM', K.stream, group, consumer, 0, id)
        entry.deliveries = attempts + 1
        retry[#retry + 1] = entry
      end
    end
  end
end
return reply(OK, {cursor = page[1], retry = list_or_nil(retry), dead = list_or_nil(dead)})
