"""A gateway stand-in for session-flow tests: it keeps the timers and fires them, no sockets."""

from __future__ import annotations

import struct
import uuid
from typing import Any

from scheduler import session_flow as flow_
from scheduler.config import SessionConfig

__all__ = ["Driver", "opus", "settings"]

SEED = uuid.UUID("00000000-0000-4000-8000-000000000000")


def settings(**overrides: Any) -> SessionConfig:
    return SessionConfig(**overrides)


def opus(packets: int, fill: int = 1) -> bytes:
    """Plan-A framed fake Opus as the browser sends it: 60 bytes (20 ms) per packet."""
    packet = bytes([fill]) * 58
    return b"".join(struct.pack("<H", len(packet)) + packet for _ in range(packets))


class Driver:
    """Feeds a ``SessionFlow`` and carries out its timer actions as the gateway does."""

    def __init__(self, config: SessionConfig | None = None, **params: Any) -> None:
        self.flow = flow_.SessionFlow(
            config or SessionConfig(), flow_.SessionParams(**params), turn_seed=SEED
        )
        self.now = 0
        self.timers: dict[str, tuple[int, int]] = {}
        self.actions: list[flow_.Action] = []

    def feed(self, event: flow_.Event, at: int | None = None) -> list[Any]:
        if at is not None:
            self.now = at
        actions = self.flow.handle(event, self.now)
        for action in actions:
            if isinstance(action, flow_.ArmTimer):
                assert action.deadline_ms >= self.now, action
                self.timers[action.kind] = (action.deadline_ms, action.generation)
            elif isinstance(action, flow_.CancelTimer):
                self.timers.pop(action.kind, None)
        self.actions.extend(actions)
        return actions

    def chunk(self, audio: bytes, at: int | None = None, final: bool = False) -> list[Any]:
        return self.feed(flow_.AudioReceived(audio=audio, is_final=final), at)

    def final(self, at: int | None = None) -> list[Any]:
        return self.chunk(b"", at, final=True)

    def fire_next(self) -> list[Any]:
        """Advance the clock to the earliest timer and fire it, as ``_run_timers`` does."""
        kind, (deadline, generation) = min(self.timers.items(), key=lambda kv: kv[1][0])
        del self.timers[kind]
        self.now = max(self.now, deadline)
        return self.feed(flow_.TimerFired(kind=kind, generation=generation))

    def run_timers(self, until: int | None = None) -> list[Any]:
        """Fire timers in deadline order (up to ``until``, if given) until none is due."""
        out: list[Any] = []
        while self.timers and (until is None or min(d for d, _ in self.timers.values()) <= until):
            out += self.fire_next()
        if until is not None:
            self.now = max(self.now, until)
        return out

    @property
    def finals(self) -> list[flow_.FinalizeUtterance]:
        return [a for a in self.actions if isinstance(a, flow_.FinalizeUtterance)]


def finals_of(actions: list[Any]) -> list[flow_.FinalizeUtterance]:
    return [a for a in actions if isinstance(a, flow_.FinalizeUtterance)]
