"""Where one replica is in its life: running, draining, fenced, drained.

The flags are written here and only read elsewhere. Fencing is an event: whoever learns that
our token is no longer live (a refused presence refresh, ack or reclaim, our inbox gone) calls
:meth:`Lifecycle.fence`; the runtime facade waits on :attr:`Lifecycle.fenced_event` and reacts in
one place (tell the owners of what we lost, drain).
"""

from __future__ import annotations

import logging

import anyio

__all__ = ["Lifecycle"]

log = logging.getLogger("lingua.runtime")


class Lifecycle:
    def __init__(self, token: str) -> None:
        self.token = token
        self.draining = False
        self.fenced = False
        # The reader and reclaim stop taking new work (a drain or a fence).
        self.stopping = False
        self.fenced_event = anyio.Event()
        # A drain was asked for (remotely, or by a fence): the request runs once.
        self.drain_asked = anyio.Event()
        self.drain_started = False
        self.drain_done = anyio.Event()

    def fence(self, why: str) -> None:
        """Our token is not live any more: stop acting (idempotent)."""
        if self.fenced:
            return
        self.fenced = True
        self.stopping = True
        log.error(
            "fenced (%s): another replica took over; stopping and draining",
            why,
            extra={"instance": self.token},
        )
        self.fenced_event.set()

    def ask_drain(self) -> bool:
        """Ask for a drain; False when one was asked for already."""
        if self.drain_asked.is_set():
            return False
        self.drain_asked.set()
        return True
