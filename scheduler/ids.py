"""The ids this replica mints: nodes that register without one, sessions, jobs.

One format per kind, written once: ``node-<8 hex>``, ``s-<16 hex>`` (upper case), and
``job-<uuid4>`` (a job id is also the core's idempotency key, so it must never repeat).
"""

from __future__ import annotations

import secrets
import uuid

__all__ = ["new_id", "new_job_id", "new_node_id", "new_session_id"]


def new_id(prefix: str, hex_chars: int = 12) -> str:
    return f"{prefix}-{secrets.token_hex(hex_chars // 2).upper()}"


def new_node_id() -> str:
    return new_id("node", 8)


def new_session_id() -> str:
    return new_id("s", 16)


def new_job_id() -> str:
    return f"job-{uuid.uuid4()}"
