-- select_node: choose a node for one job of a directed pair.
-- Preferred nodes first (turn, then session affinity) when usable; else the least-loaded live
-- node of the pool window. Cost is bounded by scan_limit candidates, never by pool size.
-- Never a node in `exclude` (tried before) nor one that was ever sent this (session, index).
-- A candidate whose liveness expired leaves the pools here (its record and jobs stay for the
-- sweeper, which fails them over); a heartbeat before that sweep brings it back.
--@include "includes/slots.lua"
--@include "includes/scheduling_codes.lua"

local function is_alive(K, node, now)
  local until_ms = rcall('ZSCORE', K.node_alive, node)
  return until_ms ~= false and tonumber(until_ms) >= now
end

local function was_sent(K, node, session, index)
  return rcall('ZSCORE', K.sent, sent_member(node, session, index)) ~= false
end

local function usable_preferred(K, node, pair, session, index, exclude, now)
  if not node or exclude[node] then
    return nil
  end
  local rec = read_node(K, node)
  if not rec or not rec.in_pools or not has_pair(rec, pair) or not is_alive(K, node, now) then
    return nil
  end
  local running = read_running(K, node)
  if running >= rec.max or was_sent(K, node, session, index) then
    return nil
  end
  return rec, running
end

local function drop_dead(K, node, member)
  local rec = read_node(K, node)
  if rec then
    leave_pools(K, node, rec, read_running(K, node))
    write_node(K, node, rec)
  end
  -- an orphan member (no record) must not block the window either
  rcall('ZREM', K.pools, member)
end

-- Returns node, rec, running on success; nil, nil, nil, code otherwise.
local function select_node(K, scan_limit, pair, session, index, exclude, preferred, now)
  for _, node in ipairs(preferred) do
    local rec, running = usable_preferred(K, node, pair, session, index, exclude, now)
    if rec then
      return node, rec, running
    end
  end
  local lo, hi = pool_range(pair)
  local prefix_len = #pair + 1
  local examined, kept = 0, 0
  local saw_any, saw_live = false, false
  while examined < scan_limit do
    local batch = rcall('ZRANGEBYLEX', K.pools, lo, hi, 'LIMIT', kept, scan_limit - examined)
    if #batch == 0 then
      break
    end
    for _, member in ipairs(batch) do
      examined = examined + 1
      saw_any = true
      local load = tonumber(string.sub(member, prefix_len + 1, prefix_len + 4))
      local node = string.sub(member, prefix_len + 6)
      if not is_alive(K, node, now) then
        drop_dead(K, node, member)
      else
        saw_live = true
        kept = kept + 1
        if load >= FULL_LOAD then
          -- members sort by load: every node after this one is full as well
          return nil, nil, nil, CODE.ALL_FULL
        end
        if not exclude[node] and not was_sent(K, node, session, index) then
          return node, read_node(K, node), read_running(K, node)
        end
      end
    end
  end
  if not saw_any then
    return nil, nil, nil, CODE.NO_POOL
  elseif saw_live then
    return nil, nil, nil, CODE.ALL_FULL
  end
  return nil, nil, nil, CODE.NO_LIVE_NODE
end
