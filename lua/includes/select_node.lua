-- select_node: choose a node for one job of a directed pair.
-- Preferred nodes first (turn, then session affinity) when usable. Else a sample: a window of
-- C.sample_size consecutive pool members from a position drawn from `seed` (the whole pool,
-- from its first member, when it has at most C.sample_size members), and the least-loaded
-- usable node of the window wins (ties: node id order). Only when the window has none, the walk
-- goes on window by window until C.scan_limit live members were examined or the pool was seen
-- whole; if it stopped short, up to C.scan_limit nodes of node_free (every node with a free
-- slot, drawn at random: all of them when that few are left) are checked for the pair, so a
-- nearly full domain still finds its last free slots. Usable: in the pools, alive, a free slot,
-- not in `exclude` (tried before), never sent this (session, index). Cost: O(log N) to place the
-- window plus O(1) per member, whatever the pool size and the pairs per node.
-- A member whose node lapsed (liveness expired, not yet swept) or left the pools is removed here
-- and the lapsed node leaves the pools (its record and jobs stay for the sweeper, which fails
-- them over; a heartbeat before that sweep brings it back). Such members do not count against
-- scan_limit, so leftovers never hide a live node with a free slot; each is removed once.
--@include "includes/slots.lua"
--@include "includes/scheduling_codes.lua"

local function is_alive(K, node, now)
  local until_ms = rcall('ZSCORE', K.node_alive, node)
  return until_ms ~= false and tonumber(until_ms) >= now
end

local function was_sent(K, node, session, index)
  return rcall('ZSCORE', K.sent, sent_member(node, session, index)) ~= false
end

-- A position in [0, count) drawn from a string (the job id): no RNG state in the script.
local function sample_start(seed, count)
  return tonumber(string.sub(redis.sha1hex(seed), 1, 12), 16) % count
end

local function usable_preferred(K, node, pair, session, index, exclude, now)
  if not node or exclude[node] then
    return false
  end
  local max = rcall('HGET', K.node_slots, node)
  if not max or not is_alive(K, node, now) then
    return false
  end
  if rcall('ZSCORE', K.pools, pool_member(pair, node)) == false then
    return false
  end
  return read_running(K, node) < tonumber(max) and not was_sent(K, node, session, index)
end

-- n members of the pair from its offset-th one on, wrapping at count (base: rank of the first).
local function members_at(K, base, count, offset, n)
  local last = offset + n - 1
  if last < count then
    return rcall('ZRANGE', K.pools, base + offset, base + last)
  end
  local list = rcall('ZRANGE', K.pools, base + offset, base + count - 1)
  for _, m in ipairs(rcall('ZRANGE', K.pools, base, base + last - count)) do
    list[#list + 1] = m
  end
  return list
end

-- The least-loaded usable node of candidates {node, load, order} (ties: order), or nil.
local function least_loaded(K, candidates, session, index)
  table.sort(candidates, function(a, b)
    if a.load ~= b.load then
      return a.load < b.load
    end
    return a.order < b.order
  end)
  for _, candidate in ipairs(candidates) do
    if not was_sent(K, candidate.node, session, index) then
      return candidate.node
    end
  end
  return nil
end

-- Nodes with a free slot anywhere, drawn from node_free, that serve the pair: the last resort
-- when the walk stopped short of the pool's end.
local function free_for_pair(K, C, pair, session, index, exclude, now)
  local candidates = {}
  for i, node in ipairs(rcall('SRANDMEMBER', K.node_free, C.scan_limit)) do
    if not exclude[node] and rcall('ZSCORE', K.pools, pool_member(pair, node)) ~= false
        and is_alive(K, node, now) then
      local running = read_running(K, node)
      local max = tonumber(rcall('HGET', K.node_slots, node) or '0')
      if running < max then
        candidates[#candidates + 1] = {node = node, load = load_of(running, max), order = i}
      end
    end
  end
  return least_loaded(K, candidates, session, index)
end

-- Returns node on success; nil, code, busy otherwise: busy is true when a live node of the
-- pair that could take the job had no free slot (worth waiting for: a slot will free), false
-- when every live node examined was excluded or already had this utterance.
-- C: {sample_size, scan_limit}; seed: a string drawing the sample's position.
local function select_node(K, C, pair, session, index, exclude, preferred, seed, now)
  for _, node in ipairs(preferred) do
    if usable_preferred(K, node, pair, session, index, exclude, now) then
      return node
    end
  end
  local lo, hi = pool_range(pair)
  local count = rcall('ZLEXCOUNT', K.pools, lo, hi)
  if count == 0 then
    return nil, CODE.NO_POOL
  end
  local base = rcall('ZRANK', K.pools, rcall('ZRANGEBYLEX', K.pools, lo, hi, 'LIMIT', 0, 1)[1])
  local start = 0
  if count > C.sample_size then
    start = sample_start(seed, count)
  end
  local prefix_len = #pair + 1
  local read, live = 0, 0
  local busy = false
  local stale, lapsed = {}, {}
  local chosen
  while not chosen and read < count and live < C.scan_limit do
    local n = math.min(C.sample_size, count - read)
    local members = members_at(K, base, count, (start + read) % count, n)
    read = read + n
    local nodes = {}
    for i, member in ipairs(members) do
      nodes[i] = string.sub(member, prefix_len + 1)
    end
    local maxes = rcall('HMGET', K.node_slots, unpack(nodes))
    local runs = rcall('HMGET', K.node_running, unpack(nodes))
    local alive = rcall('ZMSCORE', K.node_alive, unpack(nodes))
    local candidates = {}
    for i, node in ipairs(nodes) do
      if not maxes[i] or not alive[i] or tonumber(alive[i]) < now then
        stale[#stale + 1] = members[i]
        if maxes[i] then
          lapsed[#lapsed + 1] = node
        end
      else
        live = live + 1
        local running, max = tonumber(runs[i] or '0'), tonumber(maxes[i])
        if running < max and not exclude[node] then
          candidates[#candidates + 1] = {node = node, load = load_of(running, max), order = i}
        elseif not exclude[node] and not was_sent(K, node, session, index) then
          busy = true
        end
      end
    end
    chosen = least_loaded(K, candidates, session, index)
  end
  -- after the walk, so ranks stayed put while it read them
  call_chunked('ZREM', K.pools, stale, 1000)
  call_chunked('HDEL', K.node_slots, lapsed, 1000)
  call_chunked('SREM', K.node_free, lapsed, 1000)
  if not chosen and read < count then
    chosen = free_for_pair(K, C, pair, session, index, exclude, now)
  end
  if chosen then
    return chosen
  elseif live > 0 then
    return nil, CODE.ALL_FULL, busy
  end
  return nil, CODE.NO_LIVE_NODE
end
