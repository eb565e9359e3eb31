-- pools: which nodes serve which directed pair, and which of them may take work.
-- `pools` holds one member "<src>:<tgt>\0<node>" (score 0) per pair a node serves, so a pair's
-- members are adjacent in lex order, sorted by node id, and rank arithmetic reaches any of them
-- in O(log N). Members change only with capabilities (register, a heartbeat that changes the
-- languages, offline, a rejoin after a lapse): O(pairs) there, never on a slot change.
-- node_slots[node] = max slots, present exactly while the node is in the pools; its load is
-- node_running / node_slots (one field each), so a slot change is O(1) whatever the pairs.
-- node_free holds the nodes of the pools with a free slot (any pair): changed only when a node
-- fills up or frees its last slot, it lets selection find the few free nodes of a nearly full
-- domain without walking the pools.
-- INVARIANT: a node with a node_slots entry has exactly one member per pair of its languages;
-- a node without one (lapsed, offline) may have leftover members, which selection skips and
-- removes (each once). node_free == {node in node_slots : node_running < node_slots}.
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
local function pairs_of(langs)
  local list = {}
  for _, src in ipairs(langs.asr or {}) do
    for _, tgt in ipairs(langs.semantic or {}) do
      list[#list + 1] = pair_of(src, tgt)
    end
  end
  return list
end

local function pool_member(pair, node)
  return pair .. '\0' .. node
end

local function pool_range(pair)
  return '[' .. pair .. '\0', '(' .. pair .. '\1'
end

local function read_running(K, node)
  return tonumber(rcall('HGET', K.node_running, node) or '0')
end

-- The node record: {gen, digest, max, hardware, registered_ms, last_hb_ms, reported_load}.
-- Its size does not depend on the languages, so a heartbeat reads and writes it in O(1).
local function read_node(K, node)
  local raw = rcall('HGET', K.nodes, node)
  if not raw then
    return nil
  end
  return cjson.decode(raw)
end

local function write_node(K, node, rec)
  rcall('HSET', K.nodes, node, cjson.encode(rec))
end

-- The node's languages {asr, semantic, tts}: read only when capabilities change.
local function read_langs(K, node)
  local raw = rcall('HGET', K.node_langs, node)
  if not raw then
    return {}
  end
  return cjson.decode(raw)
end

local function write_langs(K, node, langs)
  rcall('HSET', K.node_langs, node, cjson.encode({asr = list_or_nil(langs.asr),
    semantic = list_or_nil(langs.semantic), tts = list_or_nil(langs.tts)}))
end

local function in_pools(K, node)
  return rcall('HEXISTS', K.node_slots, node) == 1
end

-- Puts node_free in step with the node's running count and slots (nil: out of the pools).
local function mark_free(K, node, running, max)
  if max and running < tonumber(max) then
    rcall('SADD', K.node_free, node)
  else
    rcall('SREM', K.node_free, node)
  end
end

-- Removes every member of the node's pairs (leftovers of a lapse included) and its slots entry;
-- returns how many pairs that was.
local function leave_pools(K, node, langs)
  local members = {}
  for _, pair in ipairs(pairs_of(langs)) do
    members[#members + 1] = pool_member(pair, node)
  end
  call_chunked('ZREM', K.pools, members, 1000)
  rcall('HDEL', K.node_slots, node)
  rcall('SREM', K.node_free, node)
  return #members
end

local function join_pools(K, node, langs, max)
  local args = {}
  for _, pair in ipairs(pairs_of(langs)) do
    args[#args + 1] = 0
    args[#args + 1] = pool_member(pair, node)
  end
  call_chunked('ZADD', K.pools, args, 1000)
  rcall('HSET', K.node_slots, node, max)
  mark_free(K, node, read_running(K, node), max)
end
