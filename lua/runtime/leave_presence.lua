-- leave_presence: a drained replica withdraws (its inbox is already handed over and retired).
--
-- INVARIANT: only the epoch that wrote the record removes it; a newer start of the same
-- instance id keeps its record. The inbox entry and any lease on it go too.
-- Hash tag: every key is {prefix}:{rt}:<name> (one slot).
--
-- KEYS[1] presence        HASH instance -> record json
-- KEYS[2] alive           ZSET instance -> presence expires at (ms)
-- KEYS[3] inboxes         HASH token -> inbox state
-- KEYS[4] drain_requests  HASH instance -> json {epoch, requested_ms}
-- KEYS[5] takeovers       HASH dead token -> lease json
--
-- ARGV[1] instance id
-- ARGV[2] epoch
--
-- Reply: {0 OK} | {1 REPLAYED} (the record was already gone or belongs to a newer epoch)
-- Replay: a second call finds nothing and replies REPLAYED.

--@include "includes/runtime.lua"

local K = {presence = KEYS[1], alive = KEYS[2], inboxes = KEYS[3], drain_requests = KEYS[4],
  takeovers = KEYS[5]}
local instance, epoch = ARGV[1], ARGV[2]
local token = instance .. '@' .. epoch
-- A fenced replica leaving must not disturb the takeover another replica runs on its inbox.
local state = rcall('HGET', K.inboxes, token)
if state == 'live' or state == 'takeover:' .. token then
  rcall('HDEL', K.inboxes, token)
  rcall('HDEL', K.takeovers, token)
end
if presence_epoch(K, instance) ~= epoch then
  return reply(REPLAYED)
end
rcall('HDEL', K.presence, instance)
rcall('ZREM', K.alive, instance)
rcall('HDEL', K.drain_requests, instance)
return reply(OK)
