"""Every key of the scheduling core, built in one place.

All keys of one scheduling domain share one hash tag: ``{key_prefix}:{<domain>}:<name>``, so
every script touches a single Redis Cluster slot. The key set is fixed per domain: per-node,
per-job and per-session data live in fields of domain-wide hashes and members of sorted sets,
never in keys of their own. Scripts name the keys they take in their header
(``-- KEYS[i] <name> ...``); :meth:`SchedulingKeys.for_script` reads those names, so the order
Python passes keys in always matches the script's declaration.
"""

from __future__ import annotations

from cross_instance.lua import Script

__all__ = ["KEY_NAMES", "SchedulingKeys"]

# name -> Redis type; docs/architecture.md ("Scheduling keys") describes each one.
KEY_NAMES: dict[str, str] = {
    "nodes": "HASH",
    "node_langs": "HASH",
    "node_slots": "HASH",
    "node_free": "SET",
    "node_running": "HASH",
    "node_alive": "ZSET",
    "pools": "ZSET",
    "gen_seq": "STRING",
    "node_jobs": "ZSET",
    "sent": "ZSET",
    "jobs": "HASH",
    "job_payloads": "HASH",
    "deadlines": "ZSET",
    "jobs_expiry": "ZSET",
    "idem": "HASH",
    "sessions": "HASH",
    "session_expiry": "ZSET",
    "waiting": "ZSET",
    "waiting_order": "ZSET",
    "wait_seq": "STRING",
    "sweep_clock": "STRING",
}


class SchedulingKeys:
    """Key names of one scheduling domain."""

    def __init__(self, key_prefix: str, domain: str) -> None:
        self.key_prefix = key_prefix
        self.domain = domain
        self.hash_tag = f"{{{domain}}}"

    def key(self, name: str) -> str:
        if name not in KEY_NAMES:
            raise KeyError(f"not a scheduling key: {name}")
        return f"{self.key_prefix}:{self.hash_tag}:{name}"

    def all(self) -> list[str]:
        return [self.key(name) for name in KEY_NAMES]

    def for_script(self, script: Script) -> list[str]:
        """The keys ``script`` declares, in its ``KEYS[i]`` order."""
        return [self.key(name) for name in script.key_names]
