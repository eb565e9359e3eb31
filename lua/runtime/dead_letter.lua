-- dead_letter: add one message to the DLQ, once per message id.
--
-- INVARIANT: the DLQ holds at most one entry per message id (dlq_index), so a move repeated after
-- a crash (between this call and the inbox ack) adds nothing. The DLQ is trimmed exactly to
-- ARGV[3] entries, oldest first, a bounded batch per call, with their index entries.
-- Hash tag: every key is {prefix}:{dlq}:<name> (one slot).
--
-- KEYS[1] dlq        STREAM entries {mid, dead}
-- KEYS[2] dlq_index  HASH message id -> DLQ entry id
--
-- ARGV[1] message id
-- ARGV[2] dead letter json (the full envelope and its history)
-- ARGV[3] dlq maxlen
-- ARGV[4] most entries trimmed per call
--
-- Reply: {0 OK, {id}} | {1 REPLAYED, {id}} (the message was already in the DLQ)
-- Replay: see REPLAYED.

--@include "includes/runtime.lua"

local K = {dlq = KEYS[1], dlq_index = KEYS[2]}
local mid = ARGV[1]
local existing = rcall('HGET', K.dlq_index, mid)
if existing and #rcall('XRANGE', K.dlq, existing, existing) > 0 then
  return reply(REPLAYED, {id = existing})
end
local id = rcall('XADD', K.dlq, '*', 'mid', mid, 'dead', ARGV[2])
rcall('HSET', K.dlq_index, mid, id)
local excess = rcall('XLEN', K.dlq) - tonumber(ARGV[3])
if excess > 0 then
  local oldest = rcall('XRANGE', K.dlq, '-', '+', 'COUNT', math.min(excess, tonumber(ARGV[4])))
  for _, item in ipairs(oldest) do
    rcall('XDEL', K.dlq, item[1])
    if rcall('HGET', K.dlq_index, item[2][2]) == item[1] then
      rcall('HDEL', K.dlq_index, item[2][2])
    end
  end
end
return reply(OK, {id = id})
