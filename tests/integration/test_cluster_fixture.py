from __future__ import annotations

from pathlib import Path

import pytest
from redis.exceptions import ResponseError

from cross_instance.lua import ScriptLibrary

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "lua"
pytestmark = [pytest.mark.anyio, pytest.mark.cluster]


async def test_local_cluster_has_three_masters_and_routes_scripts(
    cluster_redis, key_prefix: str
) -> None:  # type: ignore[no-untyped-def]
    nodes = cluster_redis.get_primaries()
    assert len(nodes) == 3
    library = ScriptLibrary("good", root=FIXTURES)
    # Keys on different slots reach different masters; each call is routed by its key.
    for tag in ("a", "b", "c", "d"):
        assert (
            await library.call(cluster_redis, "set_sum", [f"{key_prefix}:{{{tag}}}:k"], [1, 2]) == 3
        )
    # A multi-key command across slots is refused by the server, as our scripts must never do.
    with pytest.raises(ResponseError):
        await cluster_redis.execute_command(
            "EVAL",
            "return 1",
            2,
            f"{key_prefix}:{{a}}",
            f"{key_prefix}:{{b}}",
            target_nodes=nodes[0],
        )
