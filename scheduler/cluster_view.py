"""The cluster view: one typed model for ``/api/v1/cluster`` and the dashboard page.

The API encodes :class:`ClusterView`; the page (``dashboard.html``) reads it only through the
field paths it declares in its ``model-fields`` block, and ``tests/dashboard`` checks that every
declared path exists in this model's JSON schema, so the two cannot drift apart silently.

A node serves up to ~10,000 language pairs: the view carries a count and a few examples per node,
never the whole list. Each table is capped (``server.dashboard_rows``); the totals beside it are
counted whatever the rows shown.
"""

from __future__ import annotations

from itertools import islice
from typing import Any, Literal

import msgspec

from cross_instance import admin
from cross_instance.keys import split_token
from cross_instance.redis_client import AnyRedis
from scheduler.config import Config
from scheduler.scheduling.core import SchedulingCore
from scheduler.scheduling.types import JobInfo, NodeInfo, PoolCounts

__all__ = [
    "ClusterView",
    "DeadLetterRow",
    "DlqAction",
    "DlqActionName",
    "DlqActionResult",
    "DlqSummary",
    "JobRow",
    "JobsSummary",
    "NodeRow",
    "PoolsSummary",
    "ReplicaRow",
    "assemble",
    "read_cluster_view",
]


class ReplicaRow(msgspec.Struct, frozen=True, kw_only=True):
    instance_id: str
    epoch: str
    address: str
    version: str
    live: bool
    draining: bool
    started_ms: int
    presence_age_ms: int
    owned_nodes: int
    owned_sessions: int
    # Of this replica start's inbox (0 when it has none registered).
    inbox_length: int
    inbox_pending: int
    oldest_pending_age_ms: int


class NodeRow(msgspec.Struct, frozen=True, kw_only=True):
    node_id: str
    live: bool
    alive_until_ms: int | None
    running: int
    max: int
    in_pools: bool
    heartbeat_age_ms: int
    reported_load: Any  # the node's own resource report, as its last heartbeat sent it
    pair_count: int
    pair_examples: list[str]
    owner: str  # instance id of the replica holding its socket; "" when nobody does


class PoolsSummary(msgspec.Struct, frozen=True, kw_only=True):
    members: int  # pool entries: one per (pair, node in the pools)
    nodes_in_pools: int
    nodes_with_free_slot: int
    slots: int  # of the nodes in the pools
    running: int


class JobRow(msgspec.Struct, frozen=True, kw_only=True):
    job_id: str
    session_id: str
    pair: str
    node_id: str
    attempt: int
    state: str
    age_ms: int
    deadline_in_ms: int


class JobsSummary(msgspec.Struct, frozen=True, kw_only=True):
    in_flight: int
    rows: list[JobRow]


class DeadLetterRow(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    message_id: str
    reason: str
    kind: str
    target: str
    deliveries: int
    age_ms: int
    last_error: str


class DlqSummary(msgspec.Struct, frozen=True, kw_only=True):
    depth: int
    oldest_age_ms: int | None
    by_reason: dict[str, int]
    counted: int  # entries the by_reason counts cover (the oldest ones, up to the rows cap)
    entries: list[DeadLetterRow]


class ClusterView(msgspec.Struct, frozen=True, kw_only=True):
    now_ms: int
    refresh_ms: int
    admin_actions_enabled: bool
    replicas: list[ReplicaRow]
    orphans: int
    nodes_total: int
    nodes: list[NodeRow]
    pools: PoolsSummary
    jobs: JobsSummary
    dlq: DlqSummary


DlqActionName = Literal["replay", "purge"]


class DlqAction(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Body of ``POST /api/v1/dlq/replay`` and ``/purge``: DLQ entry ids or message ids, or
    ``all``."""

    ids: list[str] = msgspec.field(default_factory=list)
    all: bool = False


class DlqActionResult(msgspec.Struct, frozen=True, kw_only=True):
    action: DlqActionName
    done: list[str]  # DLQ entry ids replayed or purged
    skipped: list[str]  # replay only: entries whose target has no live owner (they stay)
    missing: list[str]  # ids not in the DLQ


def _replica_rows(overview: dict[str, Any]) -> list[ReplicaRow]:
    inboxes = {i["token"]: i for i in overview["inboxes"]}
    rows = []
    for r in overview["replicas"]:
        inbox = inboxes.get(r["token"], {})
        rows.append(
            ReplicaRow(
                instance_id=r["instance_id"],
                epoch=str(r["epoch"]),
                address=r["address"],
                version=r["version"],
                live=r["live"],
                draining=r["draining"],
                started_ms=r["started_ms"],
                presence_age_ms=r["presence_age_ms"],
                owned_nodes=r["owned_nodes"],
                owned_sessions=r["owned_sessions"],
                inbox_length=int(inbox.get("length", 0)),
                inbox_pending=int(inbox.get("pending", 0)),
                oldest_pending_age_ms=int(inbox.get("oldest_pending_age_ms", 0)),
            )
        )
    return rows


def _node_row(node: NodeInfo, now: int, owner_token: str, examples: int) -> NodeRow:
    # Counted from the language lists, as the pools hold them: asr x semantic.
    return NodeRow(
        node_id=node.node_id,
        live=node.alive_until_ms is not None and node.alive_until_ms > now,
        alive_until_ms=node.alive_until_ms,
        running=node.running,
        max=node.max,
        in_pools=node.in_pools,
        heartbeat_age_ms=max(0, now - node.last_hb_ms),
        reported_load=node.reported_load,
        pair_count=len(node.asr) * len(node.semantic),
        pair_examples=list(islice((f"{s}:{t}" for s in node.asr for t in node.semantic), examples)),
        owner=split_token(owner_token)[0] if owner_token else "",
    )


def _job_row(job: JobInfo, now: int) -> JobRow:
    return JobRow(
        job_id=job.job_id,
        session_id=job.session_id,
        pair=f"{job.src_lang}:{job.tgt_lang}",
        node_id=job.node_id,
        attempt=job.attempt,
        state=job.state,
        age_ms=max(0, now - job.created_ms),
        deadline_in_ms=job.deadline_ms - now,
    )


def assemble(
    config: Config,
    overview: dict[str, Any],
    nodes: list[NodeInfo],
    node_owners: dict[str, str],
    pools: PoolCounts,
    jobs: tuple[int, list[JobInfo]],
    dlq: dict[str, Any],
) -> ClusterView:
    """Pure: the pieces read from Redis in, the view out."""
    now = int(overview["now_ms"])
    server = config.server
    return ClusterView(
        now_ms=now,
        refresh_ms=server.dashboard_refresh_ms,
        admin_actions_enabled=bool(server.admin_token),
        replicas=_replica_rows(overview),
        orphans=len(overview["orphans"]),
        nodes_total=pools.nodes,
        nodes=[
            _node_row(n, now, node_owners.get(n.node_id, ""), server.dashboard_pair_examples)
            for n in nodes[: server.dashboard_rows]
        ],
        pools=PoolsSummary(
            members=pools.members,
            nodes_in_pools=pools.nodes_in_pools,
            nodes_with_free_slot=pools.nodes_with_free_slot,
            slots=pools.slots,
            running=pools.running,
        ),
        jobs=JobsSummary(in_flight=jobs[0], rows=[_job_row(j, now) for j in jobs[1]]),
        dlq=msgspec.convert(dlq, DlqSummary),
    )


async def read_cluster_view(config: Config, redis: AnyRedis, core: SchedulingCore) -> ClusterView:
    prefix = config.redis.key_prefix
    rows = config.server.dashboard_rows
    overview = await admin.cluster_overview(redis, config.runtime, prefix)
    nodes = await core.list_nodes(limit=rows, pairs=False)
    owners = await admin.owners_of(redis, prefix, "node", [n.node_id for n in nodes])
    pools = await core.pool_counts()
    jobs = await core.jobs_in_flight(limit=rows)
    dlq = await admin.dlq_summary(redis, prefix, limit=rows)
    return assemble(config, overview, nodes, owners, pools, jobs, dlq)
