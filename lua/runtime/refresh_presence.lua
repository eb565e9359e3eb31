-- refresh_presence: a replica proves it is alive (and reports draining); it learns of drain requests.
--
-- INVARIANT: only the newest epoch of an instance refreshes, and only while no other replica
-- has begun taking its inbox over: a replica that was presumed dead (paused, partitioned) gets
-- FENCED and must stop acting, because its inbox and ownership are moving to others.
-- Ownership needs no renewal of its own: an owner token is valid exactly while it is live.
-- A replica that refreshes after its own presence lapsed takes nobody over for one presence TTL
-- (takeover_not_before_ms, read by begin_takeover): a lapse is most often shared (a Redis stall
-- past the TTL lapses every presence at once), and the others need that long to refresh too.
-- Hash tag: every key is {prefix}:{rt}:<name> (one slot).
--
-- KEYS[1] presence        HASH instance -> record json
-- KEYS[2] alive           ZSET instance -> presence expires at (ms)
-- KEYS[3] inboxes         HASH token -> inbox state
-- KEYS[4] drain_requests  HASH instance -> json {epoch, requested_ms}
--
-- ARGV[1] instance id
-- ARGV[2] epoch
-- ARGV[3] draining: "1" or "0"
-- ARGV[4] presence ttl (ms)
-- ARGV[5] now (ms) or "" for server time
--
-- Reply: {0 OK, {until_ms, now_ms, drain_requested_ms?}} | {-1 FENCED}
-- Replay: idempotent apart from moving the expiry forward.

--@include "includes/runtime.lua"

local K = {presence = KEYS[1], alive = KEYS[2], inboxes = KEYS[3], drain_requests = KEYS[4]}
local instance, epoch = ARGV[1], ARGV[2]
local now = now_from(ARGV[5])
local raw = rcall('HGET', K.presence, instance)
if not raw then
  return reply(FENCED)
end
local rec = cjson.decode(raw)
-- Our own takeover (a drain handing the inbox over) keeps us refreshing until we leave.
local token = instance .. '@' .. epoch
local state = rcall('HGET', K.inboxes, token)
if rec.epoch ~= epoch or (state ~= 'live' and state ~= 'takeover:' .. token) then
  return reply(FENCED)
end
local ttl = tonumber(ARGV[4])
local was_until = tonumber(rcall('ZSCORE', K.alive, instance))
if was_until == nil or was_until <= now then
  rec.takeover_not_before_ms = now + ttl
end
rec.refreshed_ms = now
rec.draining = ARGV[3] == '1'
rcall('HSET', K.presence, instance, cjson.encode(rec))
local until_ms = now + ttl
rcall('ZADD', K.alive, until_ms, instance)
-- A drain request names the epoch it was made for: a later start of the instance ignores it.
local requested = rcall('HGET', K.drain_requests, instance)
local requested_ms = nil
if requested then
  local request = cjson.decode(requested)
  if request.epoch == epoch then
    requested_ms = request.requested_ms
  end
end
return reply(OK, {until_ms = until_ms, now_ms = now, drain_requested_ms = requested_ms})
