-- release_owner: the owner of an id lets it go (its socket closed, it drains, or its owner died).
--
-- INVARIANT: compare-and-delete on the owner token (fencing): a stale or restarted replica, or
-- one whose node reconnected elsewhere, can never remove the claim of the current owner. Every
-- id released here is remembered as ended until ARGV[3] ms from now, so routing can tell a
-- target that is known to have ended from an owner that merely looks not live. Each call also
-- forgets the ended marks that have lapsed (every mark is removed once: O(1) amortised).
-- Hash tag: every key is {prefix}:{rt}:<name> (one slot).
--
-- KEYS[1] owners       HASH id -> owner token
-- KEYS[2] owned_count  HASH "<kind>|<token>" -> count
-- KEYS[3] ended        ZSET id -> remembered as ended until (ms)
--
-- ARGV[1] kind: node | session
-- ARGV[2] expected owner token
-- ARGV[3] how long a released id is remembered as ended (ms)
-- ARGV[4] now (ms) or "" for server time
-- ARGV[5..] ids
--
-- Reply: {0 OK, {released = n}} (n ids were owned by the token and are released; the others
--        belong to someone else or no one, and are untouched)
-- Replay: a second call releases nothing.

--@include "includes/runtime.lua"

local K = {owners = KEYS[1], owned_count = KEYS[2], ended = KEYS[3]}
local kind, token = ARGV[1], ARGV[2]
local now = now_from(ARGV[4])
local ended_until = now + tonumber(ARGV[3])
rcall('ZREMRANGEBYSCORE', K.ended, '-inf', now)
local released = 0
for i = 5, #ARGV do
  if rcall('HGET', K.owners, ARGV[i]) == token then
    rcall('HDEL', K.owners, ARGV[i])
    rcall('ZADD', K.ended, ended_until, ARGV[i])
    released = released + 1
  end
end
if released > 0 then
  count_owned(K, kind, token, -released)
end
return reply(OK, {released = released})
