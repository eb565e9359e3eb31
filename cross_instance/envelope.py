"""What travels between replicas: the envelope, the dead letter, the result of a send.

An :class:`Envelope` is encoded as JSON into the ``env`` field of an inbox stream entry; a
:class:`DeadLetter` (the envelope plus its history) into the ``dead`` field of a DLQ entry.
The reply codes of the ``lua/runtime`` scripts are listed once, in :class:`RuntimeReply`.

Error tree::

    RuntimeError
    ├── RuntimeFenced       this replica's token is no longer live, or another replica took its
    │                       inbox over: it must stop acting (drain and restart with a new epoch)
    └── RuntimeDraining     this replica is draining: it takes on nothing new
"""

from __future__ import annotations

import secrets
from enum import IntEnum
from typing import Literal

import msgspec

from cross_instance.clock import now_ms

__all__ = [
    "INTERNAL_KINDS",
    "DeadLetter",
    "DeadReason",
    "Envelope",
    "Failure",
    "Route",
    "RuntimeDraining",
    "RuntimeFenced",
    "RuntimeReply",
    "SendResult",
    "TargetKind",
    "new_message_id",
    "now_ms",
]

TargetKind = Literal["node", "session"]
# dropped: no live owner and the envelope is not resumable (its target cannot come back).
Route = Literal["local", "remote", "held", "dead_letter", "dropped"]
# no_owner: no live owner within route_grace_ms; max_deliveries: the handler kept failing;
# hold_overflow: route_hold_max messages were already held; undecodable: a corrupt entry;
# inbox_full: the owner's inbox already held runtime.inbox_maxlen entries (it is not keeping up).
DeadReason = Literal["no_owner", "max_deliveries", "hold_overflow", "undecodable", "inbox_full"]

# Kinds the runtime handles itself; they never reach the handler.
OWNERSHIP_LOST = "ownership_lost"
INTERNAL_KINDS = frozenset({OWNERSHIP_LOST})


class RuntimeReply(IntEnum):
    OK = 0
    REPLAYED = 1
    MORE = 2
    FENCED = -1
    ALIVE = -3
    UNKNOWN_INBOX = -4
    BUSY = -5
    FULL = -6


class RuntimeFenced(RuntimeError):
    """Our token is not live any more (presence lapsed and the inbox is being taken over, or the
    instance id restarted with a newer epoch): nothing may be claimed, acked or released."""


class RuntimeDraining(RuntimeError):
    """The replica is draining: it claims nothing new (the client reconnects elsewhere)."""


def new_message_id() -> str:
    # Time-ordered (ms, hex) then random: readable in the DLQ and unique across replicas.
    return f"{now_ms():x}-{secrets.token_hex(8)}"


class Envelope(msgspec.Struct, kw_only=True, frozen=True):
    """One message for a node or a session, as its handler receives it."""

    message_id: str
    kind: str
    target_kind: TargetKind
    target_id: str
    payload: str
    trace_id: str = ""
    created_ms: int = 0
    origin: str = ""  # token of the sending replica
    # False: the target can never come back under this id (a client session gets a new id on
    # reconnect), so with no live owner the message is dropped (counted), not held or
    # dead-lettered: nobody could ever replay it anywhere.
    resumable: bool = True


class DeadLetter(msgspec.Struct, kw_only=True, frozen=True):
    """A DLQ entry: the envelope and where and why it stopped."""

    envelope: Envelope
    reason: DeadReason
    stream: str  # the inbox stream it was in ("" when it never reached one)
    entry_id: str  # its id in that stream
    owner: str  # the token whose inbox held it, or the owner it could not reach
    deliveries: int  # handler attempts
    last_error: str = ""
    first_failure_ms: int = 0
    last_failure_ms: int = 0
    dead_lettered_ms: int = 0
    dead_lettered_by: str = ""  # token of the replica that moved it


class Failure(msgspec.Struct, kw_only=True):
    """The handler failures of one inbox entry so far (kept next to the inbox)."""

    first_ms: int
    last_ms: int
    error: str


class SendResult(msgspec.Struct, kw_only=True, frozen=True):
    """How a send went: ``route`` says where the message went (``held``: it waits in memory up to
    ``route_grace_ms`` for an owner, then goes out or to the DLQ)."""

    route: Route
    message_id: str
    owner: str = ""  # the owner token it went to ("" when none)
    entry_id: str = ""  # the inbox (or DLQ) entry id, when it went through Redis
