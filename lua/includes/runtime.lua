-- runtime: helpers of the cross-instance runtime scripts (no keys of their own).
-- A token is "instance@epoch". A token is live when the presence record of its instance carries
-- the same epoch and that instance's alive score (expiry, ms) is still ahead of now.

--@include "includes/util.lua"
--@include "includes/runtime_codes.lua"

local function split_token(token)
  local at = string.find(token, '@[^@]*$')
  if not at then
    return nil, nil
  end
  return string.sub(token, 1, at - 1), string.sub(token, at + 1)
end

local function presence_epoch(K, instance)
  local raw = rcall('HGET', K.presence, instance)
  if not raw then
    return nil
  end
  return cjson.decode(raw).epoch
end

local function is_live(K, token, now)
  if not token or token == '' then
    return false
  end
  local instance, epoch = split_token(token)
  if not instance then
    return false
  end
  if presence_epoch(K, instance) ~= epoch then
    return false
  end
  local until_ms = tonumber(rcall('ZSCORE', K.alive, instance))
  return until_ms ~= nil and until_ms > now
end

-- owned_count fields are "<kind>|<token>"; a count that reaches 0 is removed.
local function count_owned(K, kind, token, delta)
  local field = kind .. '|' .. token
  local n = rcall('HINCRBY', K.owned_count, field, delta)
  if n <= 0 then
    rcall('HDEL', K.owned_count, field)
  end
end
