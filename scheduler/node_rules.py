"""What a node's frames mean for its connection, decided without I/O.

The node gateway asks these questions and carries out the answers (claim, register in the core,
close the socket). They are pure: a frame and what the connection knows in, a decision out.

* :func:`route` — what to do with one decoded frame on a socket (register, handle, ignore, refuse).
* :func:`registration` — whether a ``node_register`` may proceed, and as which node id.
* :func:`node_capabilities` — the capabilities a register or heartbeat announces, for the core.
* :func:`heartbeat_capabilities` — a heartbeat's capabilities, keeping what only the register
  announced (hardware; slots when the heartbeat names none).
* :func:`runs_no_job` — whether a heartbeat says the node runs no job at all.

Registration and heartbeat outcomes that depend on Redis (a stale generation, an expired record)
stay with the gateway: they are answers from the core, not decisions made here.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from scheduler import protocol as wire
from scheduler.ids import new_node_id
from scheduler.scheduling.types import NodeCapabilities

__all__ = [
    "Proceed",
    "Refuse",
    "heartbeat_capabilities",
    "node_capabilities",
    "registration",
    "route",
    "runs_no_job",
]

Route = Literal["register", "handle", "ignore", "foreign"]


def route(message: wire.NodeMessage | wire.NodeCommand, bound_node_id: str | None) -> Route:
    """``bound_node_id``: the node this socket registered as (None: not yet).

    Every frame after ``node_register`` must name the socket's own node (§7.13); the agent may
    heartbeat before its register on reconnect (§4.1): that is ignored, not refused.
    """
    if isinstance(message, wire.NodeRegister):
        return "register"
    if bound_node_id is None:
        return "ignore"
    if getattr(message, "node_id", bound_node_id) != bound_node_id:
        return "foreign"
    return "handle"


class Proceed(msgspec.Struct, frozen=True):
    node_id: str
    caps: NodeCapabilities


class Refuse(msgspec.Struct, frozen=True):
    node_id: str
    why: Literal["another_node", "no_capabilities"]


def registration(message: wire.NodeRegister, bound_node_id: str | None) -> Proceed | Refuse:
    """A node without an id gets one; one socket serves one node; a node names its languages."""
    node_id = message.node_id or new_node_id()
    if bound_node_id is not None and bound_node_id != node_id:
        return Refuse(node_id, "another_node")
    caps = node_capabilities(message)
    if caps is None:
        return Refuse(node_id, "no_capabilities")
    return Proceed(node_id, caps)


def node_capabilities(msg: wire.NodeRegister | wire.NodeHeartbeat) -> NodeCapabilities | None:
    """The capabilities a register or heartbeat announces, for the scheduling core.

    Returns None when the message carries no
    ``language_capabilities`` (a heartbeat without them only refreshes liveness). Absent lists
    are empty: the node serves no pair until it names languages (§4.2). Hardware comes from the
    register only; ``max_concurrent_jobs`` is our optional extension (None: the core's default).
    """
    langs = msg.language_capabilities
    if langs is None:
        return None
    hardware = msgspec.to_builtins(msg.hardware) if isinstance(msg, wire.NodeRegister) else {}
    return NodeCapabilities(
        asr=list(langs.asr_languages or []),
        semantic=list(langs.semantic_languages or []),
        tts=list(langs.tts_languages or []),
        max_concurrent_jobs=msg.max_concurrent_jobs,
        hardware=hardware,
    )


def heartbeat_capabilities(
    message: wire.NodeHeartbeat, registered: NodeCapabilities
) -> NodeCapabilities | None:
    """Heartbeats carry no hardware summary: the one registered is kept; a heartbeat without
    ``max_concurrent_jobs`` keeps the registered slots (it is not a request for the default).
    None: the heartbeat names no languages."""
    caps = node_capabilities(message)
    if caps is None:
        return None
    if not caps.hardware:
        caps = msgspec.structs.replace(caps, hardware=registered.hardware)
    if caps.max_concurrent_jobs is None:
        caps = msgspec.structs.replace(caps, max_concurrent_jobs=registered.max_concurrent_jobs)
    return caps


def runs_no_job(message: wire.NodeHeartbeat) -> bool:
    """The node reports no job in progress (``resource_usage.running_jobs`` counts the jobs it
    is processing, the one it finishes after a reconnect included)."""
    return message.resource_usage.running_jobs == 0
