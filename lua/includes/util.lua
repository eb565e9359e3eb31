-- util: helpers every scheduling script shares (no keys of its own).
-- Helpers take the script's key table K (logical name -> key) explicitly: an include never
-- reads KEYS[] itself, so what it touches is visible at the call site.
local rcall = redis.call

-- Time: the caller's clock when given (tests, property tests), else the server's.
local function now_from(arg)
  if arg ~= nil and arg ~= '' then
    return tonumber(arg)
  end
  local t = rcall('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Every script replies {code} or {code, json}; code >= 0 success, < 0 refusal (nothing changed).
local function reply(code, data)
  if data == nil then
    return {code}
  end
  return {code, cjson.encode(data)}
end

-- cjson encodes an empty table as {} (an object); lists that may be empty are dropped instead,
-- and the Python side defaults them to [].
local function list_or_nil(t)
  if t == nil or #t == 0 then
    return nil
  end
  return t
end

-- Redis commands with many arguments, in chunks (the Lua stack is limited).
local function call_chunked(cmd, key, args, step)
  for i = 1, #args, step do
    local last = math.min(i + step - 1, #args)
    rcall(cmd, key, unpack(args, i, last))
  end
end

local function set_of(list)
  local s = {}
  for _, v in ipairs(list or {}) do
    s[v] = true
  end
  return s
end
