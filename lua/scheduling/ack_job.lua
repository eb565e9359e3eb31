-- ack_job: the node acknowledged a job (optional progress; the real node never sends it).
--
-- INVARIANT: only the job's current (node, attempt) moves it; dispatched -> acked. A stale or
-- foreign message changes nothing. Optionally the deadline is pushed to now + job_timeout_ms.
-- Hash tag: every key is {prefix}:{domain}:<name> (one slot).
--
-- KEYS[1] jobs       HASH job -> json record
-- KEYS[2] deadlines  ZSET job -> deadline (ms)
--
-- ARGV[1] job id
-- ARGV[2] node id
-- ARGV[3] attempt
-- ARGV[4] now (ms) or ""
-- ARGV[5] job_timeout_ms to push the deadline, or "" to keep it
--
-- Reply: {0 OK, {state, deadline_ms}}
--        {1 REPLAYED, {state, deadline_ms}} already acked or further along: nothing changed
--        {-6 JOB_NOT_FOUND} {-7 STALE_ATTEMPT} {-8 FOREIGN_NODE}
--        {-9 JOB_FINISHED} the job is completed or failed
-- Replay: REPLAYED.

--@include "includes/progress_job.lua"

return progress_job({jobs = KEYS[1], deadlines = KEYS[2]}, ARGV, 'acked')
