"""What the CLI prints: aligned tables, readable times and ages, escaped ids, one JSON document.

Tables are for people: times there are ``12s ago``, ``in 25s`` or ``2026-11-30 17:02:11Z``.
``--json`` keeps the raw values (epoch and duration milliseconds) for scripts.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

import msgspec

__all__ = ["ago", "duration", "escape", "relative", "table", "timestamp", "write_json"]

_MS_PER = (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def duration(ms: int | None) -> str:
    """``850ms``, ``12s``, ``3m05s``, ``2h03m``, ``4d06h``: the two largest units, truncated."""
    if ms is None:
        return "-"
    ms = max(0, int(ms))
    if ms < 1000:
        return f"{ms}ms"
    for i, (unit, size) in enumerate(_MS_PER):
        if ms >= size:
            whole, rest = divmod(ms, size)
            if unit == "s":
                return f"{whole}s"
            small_unit, small_size = _MS_PER[i + 1]
            return f"{whole}{unit}{rest // small_size:02d}{small_unit}"
    raise AssertionError("unreachable: ms >= 1000 matches the seconds unit")


def ago(ms: int | None) -> str:
    """An age: ``12s ago``."""
    return "-" if ms is None else f"{duration(ms)} ago"


def relative(at_ms: int | None, now_ms: int) -> str:
    """A moment against now: ``in 25s`` or ``3s ago``."""
    if at_ms is None:
        return "-"
    return f"in {duration(at_ms - now_ms)}" if at_ms >= now_ms else ago(now_ms - at_ms)


def timestamp(at_ms: int | None) -> str:
    """``2026-11-30 17:02:11Z`` (UTC)."""
    if not at_ms:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(at_ms / 1000))


def escape(value: Any) -> str:
    """Control characters shown escaped, so an id cannot rewrite the terminal."""
    text = str(value)
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def write_json(data: Any) -> None:
    sys.stdout.write(msgspec.json.encode(data).decode() + "\n")
