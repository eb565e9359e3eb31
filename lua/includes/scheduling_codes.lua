-- scheduling_codes: the reply codes of every scheduling script, by name.
-- The same names and numbers as ReplyCode in scheduler/scheduling/codes.py (a test compares
-- them). code >= 0 is a success (possibly a replay that changed nothing); code < 0 a refusal
-- that changed nothing.

local CODE = {
  OK = 0,
  REPLAYED = 1,
  ALREADY_FINISHED = 2,
  WAITING = 3,
  NOT_REGISTERED = -1,
  STALE_GENERATION = -2,
  NO_POOL = -3,
  ALL_FULL = -4,
  NO_LIVE_NODE = -5,
  JOB_NOT_FOUND = -6,
  STALE_ATTEMPT = -7,
  FOREIGN_NODE = -8,
  JOB_FINISHED = -9,
}

-- code -> name, for replies that carry the reason as text (a failed failover's error)
local CODE_NAME = {}
for name, code in pairs(CODE) do
  CODE_NAME[code] = name
end
