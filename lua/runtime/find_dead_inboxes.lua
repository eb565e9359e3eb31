-- find_dead_inboxes: inboxes whose replica is no longer live and whose takeover lease is free.
--
-- INVARIANT: read only; the lease itself is taken by begin_takeover (which re-checks all this).
-- Hash tag: every key is {prefix}:{rt}:<name> (one slot).
--
-- KEYS[1] presence   HASH instance -> record json
-- KEYS[2] alive      ZSET instance -> presence expires at (ms)
-- KEYS[3] inboxes    HASH token -> inbox state
-- KEYS[4] takeovers  HASH dead token -> lease json {holder, until_ms}
--
-- ARGV[1] now (ms) or "" for server time
--
-- Reply: {0 OK, {dead = [token...]}}
-- Replay: read only.

--@include "includes/runtime.lua"

local K = {presence = KEYS[1], alive = KEYS[2], inboxes = KEYS[3], takeovers = KEYS[4]}
local now = now_from(ARGV[1])
local dead = {}
local all = rcall('HGETALL', K.inboxes)
for i = 1, #all, 2 do
  local token = all[i]
  if not is_live(K, token, now) then
    local lease = rcall('HGET', K.takeovers, token)
    if not lease or cjson.decode(lease).until_ms <= now then
      dead[#dead + 1] = token
    end
  end
end
return reply(OK, {dead = list_or_nil(dead)})
