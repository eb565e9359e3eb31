"""The one time base: wall-clock milliseconds since the epoch.

Scripts take ``now`` as an argument, envelopes carry ``sent_ms``, deadlines are compared with it:
every replica and every package reads the clock through :func:`now_ms`, so they agree on the unit.
"""

from __future__ import annotations

import time

__all__ = ["now_ms"]


def now_ms() -> int:
    """Milliseconds since the Unix epoch, by this machine's clock."""
    return time.time_ns() // 1_000_000
