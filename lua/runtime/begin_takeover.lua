-- begin_takeover: take the lease on a dead replica's inbox (or on our own, when draining).
--
-- INVARIANT: at most one holder per dead inbox at a time (a lease of ARGV[3] ms, renewable by
-- the holder, free for others once expired). The dead token's inbox state becomes
-- "takeover:<holder>", which fences the dead replica: its presence refresh replies FENCED.
-- A replica that is itself not live cannot take anything over; nor can one that came back from
-- a lapse of its own less than a presence TTL ago (refresh_presence: takeover_not_before_ms):
-- the dead replica may have lapsed in the same Redis stall and be about to refresh.
-- Hash tag: every key is {prefix}:{rt}:<name> (one slot).
--
-- KEYS[1] presence   HASH instance -> record json
-- KEYS[2] alive      ZSET instance -> presence expires at (ms)
-- KEYS[3] inboxes    HASH token -> inbox state
-- KEYS[4] takeovers  HASH dead token -> lease json {holder, until_ms}
--
-- ARGV[1] token of the inbox to take over
-- ARGV[2] holder token (ours)
-- ARGV[3] lease (ms)
-- ARGV[4] now (ms) or "" for server time
--
-- Reply: {0 OK, {until_ms}} | {-1 FENCED} (we are not live) | {-3 ALIVE} (the owner lives)
--        | {-7 TOO_SOON} (we came back from a lapse less than a presence TTL ago)
--        | {-4 UNKNOWN_INBOX} (already retired) | {-5 BUSY} (another holder's lease runs)
-- Replay: the holder calling again renews its lease.

--@include "includes/runtime.lua"

local K = {presence = KEYS[1], alive = KEYS[2], inboxes = KEYS[3], takeovers = KEYS[4]}
local dead, holder = ARGV[1], ARGV[2]
local now = now_from(ARGV[4])
if not is_live(K, holder, now) then
  return reply(FENCED)
end
if dead ~= holder and is_live(K, dead, now) then
  return reply(ALIVE)
end
if dead ~= holder then
  local holder_rec = cjson.decode(rcall('HGET', K.presence, (split_token(holder))))
  if (tonumber(holder_rec.takeover_not_before_ms) or 0) > now then
    return reply(TOO_SOON)
  end
end
if not rcall('HGET', K.inboxes, dead) then
  return reply(UNKNOWN_INBOX)
end
local lease = rcall('HGET', K.takeovers, dead)
if lease then
  local held = cjson.decode(lease)
  if held.holder ~= holder and held.until_ms > now then
    return reply(BUSY)
  end
end
local until_ms = now + tonumber(ARGV[3])
rcall('HSET', K.takeovers, dead, cjson.encode({holder = holder, until_ms = until_ms}))
rcall('HSET', K.inboxes, dead, 'takeover:' .. holder)
return reply(OK, {until_ms = until_ms})
