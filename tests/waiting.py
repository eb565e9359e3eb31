"""Waiting for a condition another process brings about (no event crosses the process line)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio

__all__ = ["until"]


async def until(check: Callable[[], Awaitable[bool] | bool], limit_s: float = 10.0) -> None:
    """Wait until ``check()`` is true (polls every 20 ms); fails the test after ``limit_s``."""
    with anyio.fail_after(limit_s):
        while True:
            result = check()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            await anyio.sleep(0.02)
