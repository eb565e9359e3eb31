"""What travels between replicas: the envelope, the dead letter, the result of a send.

An :class:`Envelope` is encoded as JSON into the ``env`` field of an inbox stream entry; a
:class:`DeadLetter` (the envelope plus its history) into the ``dead`` field of a DLQ entry.
A :class:`Trail` is what a message carries on its way (handler attempts, last failure, the
inbox entry it came from): routing, holds and the DLQ pass it along instead of four arguments.
The reply codes and exceptions live in :mod:`cross_instance.errors`; they are importable from
here too, where the runtime's users have always found them.
"""

from __future__ import annotations

import secrets
from typing import Literal

import msgspec

from cross_instance.clock import now_ms
from cross_instance.errors import RuntimeDraining, RuntimeFenced, RuntimeReply

__all__ = [
    "INTERNAL_KINDS",
    "DeadLetter",
    "DeadReason",
    "DropReason",
    "Envelope",
    "Failure",
    "LostReason",
    "Route",
    "RuntimeDraining",
    "RuntimeFenced",
    "RuntimeReply",
    "SendResult",
    "TargetKind",
    "Trail",
    "describe",
    "new_message_id",
]

TargetKind = Literal["node", "session"]
# dropped: the envelope is not resumable and its target is known to have ended.
Route = Literal["local", "remote", "held", "dead_letter", "dropped"]
# Why a non-resumable message was dropped: ended: its target's owner released it (routing found
# the release, within runtime.ended_ttl_ms); not_owned_here: its handler here failed and this
# replica no longer owns the target (released it, lost it to a newer claim, or was fenced);
# obsolete: held past route_grace_ms, and the sender's hook says nothing needs it any more (a
# job_assign whose job has moved to another node meanwhile), so it is not dead-lettered.
DropReason = Literal["ended", "not_owned_here", "obsolete"]
# Why a message was lost although it should have reached the DLQ (counted and logged as an error):
# dlq_unreachable: a send still held when its replica left, which Redis did not take.
LostReason = Literal["dlq_unreachable"]
# no_owner: no live owner within route_grace_ms; max_deliveries: the handler kept failing;
# hold_overflow: route_hold_max messages were already held; undecodable: a corrupt entry;
# inbox_full: the owner's inbox already held runtime.inbox_maxlen entries (it is not keeping up).
DeadReason = Literal["no_owner", "max_deliveries", "hold_overflow", "undecodable", "inbox_full"]

# Kinds the runtime handles itself; they never reach the handler.
OWNERSHIP_LOST = "ownership_lost"
INTERNAL_KINDS = frozenset({OWNERSHIP_LOST})


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
    # When the work this message serves began (e.g. the utterance's finalize), ms; 0: not given.
    # The receiver measures an end-to-end latency from it (the daemon's latency histograms).
    began_ms: int = 0
    # False: the target can never come back under this id (a client session gets a new id on
    # reconnect), so once it is known to have ended (its owner released it) the message is
    # dropped (counted), not held or dead-lettered: nobody could ever replay it anywhere. An
    # owner that merely looks not live is waited for like any other (held, then the DLQ).
    resumable: bool = True
    # The sender's trace context, opaque to the runtime (a W3C traceparent when the daemon traces,
    # else ""): carried as is through inboxes, re-routes, takeovers and the DLQ. An envelope
    # written before the field existed decodes with "".
    tc: str = ""


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


def describe(exc: BaseException) -> str:
    """A handler failure as stored with its entry (bounded)."""
    return f"{type(exc).__name__}: {exc}"[:1000]


class Trail(msgspec.Struct, kw_only=True, frozen=True):
    """Where a message has been: handler attempts so far, the last failure, and the inbox entry
    it came out of (``stream`` "" when it never reached an inbox, e.g. a fresh send)."""

    deliveries: int = 0
    failure: Failure | None = None
    stream: str = ""
    entry_id: str = ""

    def failed(self, exc: BaseException) -> Trail:
        """One more attempt, which failed with ``exc``."""
        now = now_ms()
        first = self.failure.first_ms if self.failure else now
        failure = Failure(first_ms=first, last_ms=now, error=describe(exc))
        return Trail(
            deliveries=self.deliveries + 1,
            failure=failure,
            stream=self.stream,
            entry_id=self.entry_id,
        )
