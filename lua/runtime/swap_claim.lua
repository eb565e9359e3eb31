-- swap_claim: replace or remove a dedup claim, only if it is still the one we saw.
--
-- Used when a delivery's handler failed (its own claim goes, so a retry can claim at once) and
-- when a claim's holder is gone (its replica died or its attempt was cancelled: the claim is
-- taken over, so the message is not held up until the claim expires).
-- INVARIANT: compare-and-set on the claim value: a done mark, or a claim other than the one
-- the caller saw, stays as it is.
-- Hash tag: the one key is {prefix}:dedup:{<message_id>}.
--
-- KEYS[1] dedup  STRING a claim ("claim:<token>:<nonce>") or the done mark (a token)
--
-- ARGV[1] the claim value the caller saw
-- ARGV[2] the new claim value, or "" to remove the claim
-- ARGV[3] TTL of the new claim (ms)
--
-- Reply: {0 OK, {swapped = 0|1}}
-- Replay: a second call no longer finds the claim it saw and swaps nothing.

--@include "includes/runtime.lua"

local K = {dedup = KEYS[1]}
if rcall('GET', K.dedup) ~= ARGV[1] then
  return reply(OK, {swapped = 0})
end
if ARGV[2] == '' then
  rcall('DEL', K.dedup)
else
  rcall('SET', K.dedup, ARGV[2], 'PX', ARGV[3])
end
return reply(OK, {swapped = 1})
