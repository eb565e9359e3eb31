-- runtime_codes: the reply codes of the lua/runtime scripts, named once (no keys, no functions).
-- cross_instance/errors.py (RuntimeReply) mirrors them name for name and value for value; a test
-- checks that the two agree. Code >= 0: success; < 0: a refusal (the script changed nothing).

local OK = 0
local REPLAYED = 1       -- the change was already made (nothing new happened)
local MORE = 2           -- not done yet: call again
local FENCED = -1        -- the calling token is not live, or another holder fenced the inbox
local ALIVE = -3         -- the replica whose inbox was to be taken over is live
local UNKNOWN_INBOX = -4 -- the inbox was retired (or never existed)
local BUSY = -5          -- another holder's takeover lease runs
local FULL = -6          -- the inbox holds its maximum of entries
local TOO_SOON = -7      -- we came back from a lapse of our presence: others may still refresh
