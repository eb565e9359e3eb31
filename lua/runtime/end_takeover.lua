-- end_takeover: the holder re-routed every entry and retired the dead inbox; forget the replica.
--
-- INVARIANT: only the lease holder ends a takeover. The dead token's presence record (when it
-- is still the record of that epoch), its inbox entry, its lease and its ownership counts go.
-- Hash tag: every key is {prefix}:{rt}:<name> (one slot).
--
-- KEYS[1] presence     HASH instance -> record json
-- KEYS[2] alive        ZSET instance -> presence expires at (ms)
-- KEYS[3] inboxes      HASH token -> inbox state
-- KEYS[4] takeovers    HASH dead token -> lease json
-- KEYS[5] owned_count  HASH "<kind>|<token>" -> count
--
-- ARGV[1] dead token
-- ARGV[2] holder token
--
-- Reply: {0 OK} | {-5 BUSY} (we do not hold the lease)
-- Replay: a second call finds no lease and replies BUSY; nothing changes.

--@include "includes/runtime.lua"

local K = {presence = KEYS[1], alive = KEYS[2], inboxes = KEYS[3], takeovers = KEYS[4],
  owned_count = KEYS[5]}
local dead, holder = ARGV[1], ARGV[2]
local lease = rcall('HGET', K.takeovers, dead)
if not lease or cjson.decode(lease).holder ~= holder then
  return reply(BUSY)
end
rcall('HDEL', K.takeovers, dead)
rcall('HDEL', K.inboxes, dead)
rcall('HDEL', K.owned_count, 'node|' .. dead, 'session|' .. dead)
local instance, epoch = split_token(dead)
if instance and presence_epoch(K, instance) == epoch then
  rcall('HDEL', K.presence, instance)
  rcall('ZREM', K.alive, instance)
end
return reply(OK)
