-- claim_owner: a node registered / a session started on this replica: it owns the id from now on.
--
-- INVARIANT: one owner token per id; the newest claim by a live token wins in one step (no
-- delayed owner key). A token that is not live (fenced, restarted, presumed dead) cannot claim.
-- The reply names the previous owner and whether it is live, so the caller can tell it to close
-- its stale socket. owned_count follows every change; a claimed id is no longer ended.
-- Hash tag: every key is {prefix}:{rt}:<name> (one slot).
--
-- KEYS[1] presence     HASH instance -> record json
-- KEYS[2] alive        ZSET instance -> presence expires at (ms)
-- KEYS[3] owners       HASH id -> owner token (node_owner or session_owner)
-- KEYS[4] owned_count  HASH "<kind>|<token>" -> count
-- KEYS[5] ended        ZSET id -> remembered as ended until (ms) (release_owner)
--
-- ARGV[1] kind: node | session
-- ARGV[2] id
-- ARGV[3] claiming token instance@epoch
-- ARGV[4] now (ms) or "" for server time
--
-- Reply: {0 OK, {previous?, previous_live}} | {1 REPLAYED} (already ours) | {-1 FENCED}
-- Replay: claiming an id we own changes nothing.

--@include "includes/runtime.lua"

local K = {presence = KEYS[1], alive = KEYS[2], owners = KEYS[3], owned_count = KEYS[4],
  ended = KEYS[5]}
local kind, id, token = ARGV[1], ARGV[2], ARGV[3]
local now = now_from(ARGV[4])
if not is_live(K, token, now) then
  return reply(FENCED)
end
local previous = rcall('HGET', K.owners, id)
if previous == token then
  return reply(REPLAYED)
end
rcall('HSET', K.owners, id, token)
rcall('ZREM', K.ended, id)
count_owned(K, kind, token, 1)
if previous then
  count_owned(K, kind, previous, -1)
  return reply(OK, {previous = previous, previous_live = is_live(K, previous, now)})
end
return reply(OK, {previous_live = false})
