"""The reply codes of the ``lua/runtime`` scripts and the exceptions the runtime raises.

:class:`RuntimeReply` mirrors ``lua/includes/runtime_codes.lua`` name for name and value for
value (a test checks it). A script's reply code >= 0 is a success, < 0 a refusal that changed
nothing. The one refusal that is an exception for the runtime's users is FENCED; the others
(ALIVE, UNKNOWN_INBOX, BUSY, FULL, TOO_SOON) are outcomes the runtime decides on itself.

Exception tree::

    RuntimeError
    ├── RuntimeFenced       this replica's token is no longer live, or another replica took its
    │                       inbox over: it must stop acting (drain and restart with a new epoch);
    │                       a script replying FENCED is raised as this (:func:`fenced_unless`)
    └── RuntimeDraining     this replica is draining: it takes on nothing new
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["RuntimeDraining", "RuntimeFenced", "RuntimeReply", "fenced_unless"]


class RuntimeReply(IntEnum):
    OK = 0
    REPLAYED = 1
    MORE = 2
    FENCED = -1
    ALIVE = -3
    UNKNOWN_INBOX = -4
    BUSY = -5
    FULL = -6
    TOO_SOON = -7


class RuntimeFenced(RuntimeError):
    """Our token is not live any more (presence lapsed and the inbox is being taken over, or the
    instance id restarted with a newer epoch): nothing may be claimed, acked or released."""


class RuntimeDraining(RuntimeError):
    """The replica is draining: it claims nothing new (the client reconnects elsewhere)."""


def fenced_unless(code: RuntimeReply, message: str) -> RuntimeReply:
    """``code`` itself, unless it is FENCED: then :class:`RuntimeFenced` with ``message``."""
    if code is RuntimeReply.FENCED:
        raise RuntimeFenced(message)
    return code
