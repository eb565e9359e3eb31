-- pools: pool membership and the load encoded in it.
-- A pool member is "<src>:<tgt>\0<load 4 digits>\0<node>" (score 0): ZRANGEBYLEX over one pair
-- yields its nodes least-loaded first. load = floor(1000 * running / max), 1000 = full.
-- INVARIANT kept by every caller: a node with in_pools = true has exactly one member per pair
-- of its record, carrying the load of its current node_running count.
--@include "includes/util.lua"

local FULL_LOAD = 1000

local function load_of(running, max)
  if running >= max then
    return FULL_LOAD
  end
  return math.floor(FULL_LOAD * running / max)
end

-- A directed pair "<src>:<tgt>" (a member prefix, never a key name).
local function pair_of(src, tgt)
  return string.format('%s:%s', src, tgt)
end

-- Every directed pair asr x semantic, identity pairs included (as the original).
local function pairs_of(caps)
  local list = {}
  for _, src in ipairs(caps.asr or {}) do
    for _, tgt in ipairs(caps.semantic or {}) do
      list[#list + 1] = pair_of(src, tgt)
    end
  end
  return list
end

local function pool_member(pair, load, node)
  return pair .. '\0' .. string.format('%04d', load) .. '\0' .. node
end

local function pool_range(pair)
  return '[' .. pair .. '\0', '(' .. pair .. '\1'
end

local function read_running(K, node)
  return tonumber(rcall('HGET', K.node_running, node) or '0')
end

local function read_node(K, node)
  local raw = rcall('HGET', K.nodes, node)
  if not raw then
    return nil
  end
  return cjson.decode(raw)
end

local function write_node(K, node, rec)
  rec.asr = list_or_nil(rec.asr)
  rec.semantic = list_or_nil(rec.semantic)
  rec.tts = list_or_nil(rec.tts)
  rec.pairs = list_or_nil(rec.pairs)
  rcall('HSET', K.nodes, node, cjson.encode(rec))
end

local function has_pair(rec, pair)
  for _, p in ipairs(rec.pairs or {}) do
    if p == pair then
      return true
    end
  end
  return false
end

local function leave_pools(K, node, rec, running)
  if not rec.in_pools then
    return
  end
  local load = load_of(running, rec.max)
  local members = {}
  for _, pair in ipairs(rec.pairs or {}) do
    members[#members + 1] = pool_member(pair, load, node)
  end
  call_chunked('ZREM', K.pools, members, 1000)
  rec.in_pools = false
end

local function join_pools(K, node, rec, running)
  local load = load_of(running, rec.max)
  local args = {}
  for _, pair in ipairs(rec.pairs or {}) do
    args[#args + 1] = 0
    args[#args + 1] = pool_member(pair, load, node)
  end
  call_chunked('ZADD', K.pools, args, 1000)
  rec.in_pools = true
end

-- The node's running count went from old_running to new_running: rewrite its members.
local function move_load(K, node, rec, old_running, new_running)
  if not rec.in_pools then
    return
  end
  local before, after = load_of(old_running, rec.max), load_of(new_running, rec.max)
  if before == after then
    return
  end
  for _, pair in ipairs(rec.pairs or {}) do
    rcall('ZREM', K.pools, pool_member(pair, before, node))
    rcall('ZADD', K.pools, 0, pool_member(pair, after, node))
  end
end
