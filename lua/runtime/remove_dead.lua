-- remove_dead: DLQ entries were replayed or purged: delete them and their index entries.
--
-- INVARIANT: an index entry goes only with the DLQ entry it points to.
-- Hash tag: every key is {prefix}:{dlq}:<name> (one slot).
--
-- KEYS[1] dlq        STREAM entries {mid, dead}
-- KEYS[2] dlq_index  HASH message id -> DLQ entry id
--
-- ARGV[1..] DLQ entry ids
--
-- Reply: {0 OK, {removed = n}}
-- Replay: removing a removed entry changes nothing.

--@include "includes/runtime.lua"

local K = {dlq = KEYS[1], dlq_index = KEYS[2]}
local removed = 0
for i = 1, #ARGV do
  local found = rcall('XRANGE', K.dlq, ARGV[i], ARGV[i])
  if #found > 0 then
    local mid = found[1][2][2]
    if rcall('HGET', K.dlq_index, mid) == ARGV[i] then
      rcall('HDEL', K.dlq_index, mid)
    end
    removed = removed + rcall('XDEL', K.dlq, ARGV[i])
  end
end
return reply(OK, {removed = removed})
