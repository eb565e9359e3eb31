-- register_presence: a replica starts; its presence record and inbox are announced.
--
-- INVARIANT: one presence record per instance id, carrying the epoch of its newest start; a
-- restart with the same id replaces the record, so the previous epoch's token stops being live
-- and its inbox (still listed in inboxes) is taken over by a live replica.
-- Hash tag: every key is {prefix}:{rt}:<name> (one slot).
--
-- KEYS[1] presence  HASH instance -> record json {instance_id, epoch, address, version, ...}
-- KEYS[2] alive     ZSET instance -> presence expires at (ms)
-- KEYS[3] inboxes   HASH token -> "live" | "takeover:<token>"
--
-- ARGV[1] instance id
-- ARGV[2] epoch
-- ARGV[3] record json (the script stamps started_ms and refreshed_ms)
-- ARGV[4] presence ttl (ms)
-- ARGV[5] now (ms) or "" for server time
--
-- Reply: {0 OK, {until_ms, now_ms}}
-- Replay: a repeated call refreshes the same record; nothing else differs.

--@include "includes/runtime.lua"

local K = {presence = KEYS[1], alive = KEYS[2], inboxes = KEYS[3]}
local instance, epoch = ARGV[1], ARGV[2]
local now = now_from(ARGV[5])
local rec = cjson.decode(ARGV[3])
rec.instance_id = instance
rec.epoch = epoch
rec.started_ms = now
rec.refreshed_ms = now
rec.draining = false
rcall('HSET', K.presence, instance, cjson.encode(rec))
rcall('ZADD', K.alive, now + tonumber(ARGV[4]), instance)
rcall('HSET', K.inboxes, instance .. '@' .. epoch, 'live')
return reply(OK, {until_ms = now + tonumber(ARGV[4]), now_ms = now})
