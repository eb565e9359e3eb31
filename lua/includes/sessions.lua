-- sessions: session and turn affinity, one record per session:
-- sessions[session] = {node = <affine node>, turns = {<tgt> = {id = <turn_id>, node = <node>}}}
-- or, once the session ended (end_session), {ended = true} until its jobs can no longer move.
-- session_expiry scores the session by when the record is forgotten.
--@include "includes/util.lua"

local function read_session(K, session)
  local raw = rcall('HGET', K.sessions, session)
  if not raw then
    return {turns = {}}
  end
  local rec = cjson.decode(raw)
  rec.turns = rec.turns or {}
  return rec
end

-- The session ended (end_session): its jobs are not moved to other nodes any more.
local function session_ended(K, session)
  local raw = rcall('HGET', K.sessions, session)
  return raw ~= false and raw ~= nil and cjson.decode(raw).ended == true
end

local function write_session(K, session, rec)
  if next(rec.turns) == nil then
    rec.turns = nil
  end
  rcall('HSET', K.sessions, session, cjson.encode(rec))
end

-- A job moved from old_node to new_node (failover): affinity that pointed at the old node
-- follows the job, so the rest of the session and its turn land where the job went.
local function follow_move(K, session, tgt, old_node, new_node)
  local raw = rcall('HGET', K.sessions, session)
  if not raw then
    return
  end
  local rec = cjson.decode(raw)
  rec.turns = rec.turns or {}
  if rec.node == old_node then
    rec.node = new_node
  end
  local turn = rec.turns[tgt]
  if turn and turn.node == old_node then
    turn.node = new_node
  end
  write_session(K, session, rec)
end
