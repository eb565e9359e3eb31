-- acquire_tenant_session: count one more open session against its tenant, unless the tenant
-- has its limit of sessions open already (across every replica).
--
-- INVARIANT: the ZSET holds the tenant's sessions whose lease has not run out; a session counts
-- from its acquire until its release (ZREM when it ends) or until its replica stops renewing it
-- (the replica died): a lease past `now` is dropped here before counting.
-- Hash tag: every tenant key is {prefix}:{tenants}:<tenant> (one slot for all of them).
--
-- KEYS[1] sessions  ZSET session id -> lease expiry (ms)
--
-- ARGV[1] session id
-- ARGV[2] limit: most sessions of the tenant (>= 1)
-- ARGV[3] lease_ms: the lease runs out this long after now unless renewed
-- ARGV[4] now (ms)
--
-- Reply: {0, count} acquired (or renewed, when the session held a lease): count with it
--        {-1, count} the tenant has `limit` sessions already: nothing changed but expired leases
-- Replay: OK, the lease is renewed.

local rcall = redis.call
local sessions, session_id = KEYS[1], ARGV[1]
local limit, lease_ms, now = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])

rcall('ZREMRANGEBYSCORE', sessions, '-inf', now)
local count = rcall('ZCARD', sessions)
if not rcall('ZSCORE', sessions, session_id) then
  if count >= limit then
    return {-1, count}
  end
  count = count + 1
end
rcall('ZADD', sessions, now + lease_ms, session_id)
rcall('PEXPIRE', sessions, lease_ms)
return {0, count}
