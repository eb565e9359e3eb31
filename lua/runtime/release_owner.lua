-- release_owner: the owner of an id lets it go (its socket closed, it drains, or its owner died).
--
-- INVARIANT: compare-and-delete on the owner token (fencing): a stale or restarted replica, or
-- one whose node reconnected elsewhere, can never remove the claim of the current owner.
-- Hash tag: every key is {prefix}:{rt}:<name> (one slot).
--
-- KEYS[1] owners       HASH id -> owner token
-- KEYS[2] owned_count  HASH "<kind>|<token>" -> count
--
-- ARGV[1] kind: node | session
-- ARGV[2] expected owner token
-- ARGV[3..] ids
--
-- Reply: {0 OK, {released = n}} (n ids were owned by the token and are released; the others
--        belong to someone else or no one, and are untouched)
-- Replay: a second call releases nothing.

--@include "includes/runtime.lua"

local K = {owners = KEYS[1], owned_count = KEYS[2]}
local kind, token = ARGV[1], ARGV[2]
local released = 0
for i = 3, #ARGV do
  if rcall('HGET', K.owners, ARGV[i]) == token then
    rcall('HDEL', K.owners, ARGV[i])
    released = released + 1
  end
end
if released > 0 then
  count_owned(K, kind, token, -released)
end
return reply(OK, {released = released})
