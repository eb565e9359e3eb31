"""The ids this replica mints: nodes that register without one, sessions, jobs.

One format per kind, written once: ``node-<8 hex>``, ``s-<32 hex>`` (upper case), and
``job-<32 hex>`` (lower case). Session and job ids are unguessable: 128 random bits each from
:mod:`secrets` (a uuid4 has only 122); a job id is also the core's idempotency key, so it must
never repeat. A node id is a name, not a secret: nodes prove who they are with a credential
(docs/security.md, "Node authentication").
"""

from __future__ import annotations

import secrets

__all__ = ["ID_RANDOM_BITS", "new_id", "new_job_id", "new_node_id", "new_session_id"]

# Random bits of a session or job id.
ID_RANDOM_BITS = 128


def new_id(prefix: str, hex_chars: int = 12) -> str:
    return f"{prefix}-{secrets.token_hex(hex_chars // 2).upper()}"


def new_node_id() -> str:
    return new_id("node", 8)


def new_session_id() -> str:
    return new_id("s", ID_RANDOM_BITS // 4)


def new_job_id() -> str:
    return f"job-{secrets.token_hex(ID_RANDOM_BITS // 8)}"
