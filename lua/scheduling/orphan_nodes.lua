-- orphan_nodes: the replica that held these nodes' sockets died; its ids were released by the
-- takeover. A node that has not registered again since (the real node reconnects about 5 s
-- after its socket drops, before the takeover as a rule) will not be heard from through that
-- replica: its liveness is cut to now + grace, so the sweep takes it offline then and its
-- jobs move, instead of waiting for node_ttl_ms or for their deadlines.
--
-- INVARIANT: only a node quiet for quiet_ms (no registration, no heartbeat) is cut: one that
-- registered again meanwhile (its new connection's heartbeats refresh last_hb_ms) is left
-- alone, and a registration after this call sets its liveness anew. Liveness only shortens.
-- Hash tag: every key is {prefix}:{domain}:<name> (one slot).
--
-- KEYS[1] nodes       HASH node -> json record {gen, registered_ms, last_hb_ms, ...}
-- KEYS[2] node_alive  ZSET node -> alive until (ms)
--
-- ARGV[1] now (ms) or ""
-- ARGV[2] quiet_ms: a node heard from more recently than this is left alone
-- ARGV[3] grace_ms: how long an orphaned node has left to come back
-- ARGV[4..] node ids
--
-- Reply: {0 OK, {cut}} how many nodes' liveness was cut
-- Replay: a second call cuts nothing more (the liveness is already at most now + grace).

--@include "includes/pools.lua"
--@include "includes/scheduling_codes.lua"

local K = {nodes = KEYS[1], node_alive = KEYS[2]}
local now = now_from(ARGV[1])
local quiet_ms = tonumber(ARGV[2])
local grace_ms = tonumber(ARGV[3])
local cut = 0
for i = 4, #ARGV do
  local node = ARGV[i]
  local rec = read_node(K, node)
  local heard = rec and (rec.last_hb_ms or rec.registered_ms or now)
  local alive = tonumber(rcall('ZSCORE', K.node_alive, node) or '0')
  if rec and now - heard > quiet_ms and alive > now + grace_ms then
    rcall('ZADD', K.node_alive, now + grace_ms, node)
    cut = cut + 1
  end
end
return reply(CODE.OK, {cut = cut})
