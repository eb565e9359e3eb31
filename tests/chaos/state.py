"""What the chaos suite reads from Redis, in one place (the key layout may change: change it here).

* :func:`running_slots`: each node's running-slot count (the ``node_running`` hash of the
  scheduling domain, see docs/architecture.md "Scheduling keys"). The one reader of slots: the
  leak count of every scenario, and the deliberately broken build's leak, go through this module.
* :func:`active_jobs`: jobs still waiting for a result (members of ``deadlines``).
* :func:`pending_messages`: entries in the replicas' inbox streams and the dead-letter stream.
* :func:`node_owners`: which replica instance owns how many nodes (and sessions).
"""

from __future__ import annotations

from collections import Counter

from redis import Redis

from cross_instance.keys import RuntimeKeys, split_token
from scheduler.scheduling.keys import SchedulingKeys

__all__ = [
    "DOMAIN",
    "active_jobs",
    "leak_one_slot",
    "node_owners",
    "pending_messages",
    "running_slots",
]

DOMAIN = "d0"  # scheduling.domain: the default


def running_slots(client: Redis, prefix: str) -> dict[str, int]:
    """node id -> slots it holds in Redis right now (0 for every node once all jobs ended)."""
    raw = client.hgetall(SchedulingKeys(prefix, DOMAIN).key("node_running"))
    return {_s(k): int(v) for k, v in raw.items()}


def leak_one_slot(client: Redis, prefix: str, node_id: str) -> None:
    """Reserve a slot on ``node_id`` that no job holds (the broken build's leak)."""
    client.hincrby(SchedulingKeys(prefix, DOMAIN).key("node_running"), node_id, 1)


def active_jobs(client: Redis, prefix: str) -> int:
    return int(client.zcard(SchedulingKeys(prefix, DOMAIN).key("deadlines")))


def pending_messages(client: Redis, prefix: str) -> dict[str, int]:
    """Entries still in each inbox stream (by token) and in the DLQ (``"dlq"``)."""
    keys = RuntimeKeys(prefix)
    out = {}
    for token in client.hkeys(keys.rt("inboxes")):
        out[_s(token)] = int(client.xlen(keys.inbox(_s(token))))
    out["dlq"] = int(client.xlen(keys.dlq()))
    return out


def node_owners(client: Redis, prefix: str, kind: str = "node") -> Counter[str]:
    """instance id -> how many ids of ``kind`` (node / session) it owns."""
    owners = client.hgetall(RuntimeKeys(prefix).owners(kind))
    return Counter(split_token(_s(token))[0] for token in owners.values())


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
