"""The cluster view assembled from what Redis holds (pure): a node serving ~10,000 pairs costs a
count and a few examples, not the pairs."""

from __future__ import annotations

import msgspec

from scheduler.cluster_view import ClusterView, assemble
from scheduler.config import Config
from scheduler.scheduling.types import NodeInfo, PoolCounts

LANGS = [f"l{i:02d}" for i in range(100)]
NOW = 1_800_000_000_000


def node(node_id: str, asr: list[str], semantic: list[str], running: int = 0) -> NodeInfo:
    return NodeInfo(
        node_id=node_id, generation=1, asr=asr, semantic=semantic, tts=semantic, max=4,
        running=running, alive_until_ms=NOW + 10_000, in_pools=True,
        pairs=[f"{s}:{t}" for s in asr for t in semantic], hardware={}, reported_load=None,
        registered_ms=NOW - 60_000, last_hb_ms=NOW - 2_000,
    )  # fmt: skip


def view(nodes: list[NodeInfo], config: Config | None = None) -> ClusterView:
    overview = {"now_ms": NOW, "replicas": [], "orphans": [], "inboxes": []}
    dlq = {"depth": 0, "oldest_age_ms": None, "by_reason": {}, "counted": 0, "entries": []}
    pools = PoolCounts(
        members=10_000 * len(nodes), nodes=len(nodes), nodes_in_pools=len(nodes),
        nodes_with_free_slot=len(nodes), slots=4 * len(nodes), running=0,
    )  # fmt: skip
    return assemble(config or Config(), overview, nodes, {"big": "r1@7"}, pools, (0, []), dlq)


def test_a_node_of_ten_thousand_pairs_is_a_count_and_a_few_examples() -> None:
    [row] = view([node("big", LANGS, LANGS)]).nodes
    assert row.pair_count == 10_000
    assert row.pair_examples == ["l00:l00", "l00:l01", "l00:l02"]
    assert row.owner == "r1" and row.live and row.heartbeat_age_ms == 2_000
    assert len(msgspec.json.encode(row)) < 500


def test_rows_are_capped_and_totals_are_not() -> None:
    config = msgspec.convert({"server": {"dashboard_rows": 2}}, Config)
    nodes = [node(f"n{i}", ["de"], ["fr"], running=1) for i in range(5)]
    shown = view(nodes, config)
    assert [n.node_id for n in shown.nodes] == ["n0", "n1"]
    assert shown.nodes_total == 5 and shown.pools.slots == 20
    assert shown.nodes[1].owner == ""  # nobody holds its socket
