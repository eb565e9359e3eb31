"""Node authentication (issue 14 item 1): a node presents a shared secret or a signed token on
``/ws/node`` (``?token=`` or ``Authorization: Bearer``); without a valid one it is refused with an
error frame and 1008 before anything is claimed or registered.

Real replicas in the test process (tests/gateways/conftest.py's ``serve``), the TLS-only,
ACL-only Redis of this folder, real WebSocket clients speaking the Electron node's frames.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest
from websockets.exceptions import ConnectionClosed

from scheduler.replica import Replica
from tests.e2e.clients import SimNode
from tests.gateways.conftest import Served, serve
from tests.security.auth_peers import (
    KEY_NEW,
    KEY_OLD,
    HeaderNode,
    exposition,
    node_token,
    refusals,
    session_token,
)
from tests.waiting import until

__all__ = ["serve"]

pytestmark = pytest.mark.anyio

Serve = Callable[..., Awaitable[Served]]
Connect = Callable[[Any], Awaitable[Any]]

SECRET_OLD = "old-node-secret-0123456789"
SECRET_NEW = "new-node-secret-0123456789"


async def _refused(node: SimNode, replica: Replica, announced: str | None = None) -> dict[str, Any]:
    """The node sends its registration anyway; it gets one error frame and 1008, and the
    replica registered nothing and claimed nothing."""
    nodes_before = await replica.core.list_nodes()
    owned_before = replica.runtime.ownership.owned_of("node")
    try:
        await node.send(node.register_message())
    except ConnectionClosed:
        pass  # refused at the handshake, before its first frame
    with anyio.fail_after(10):
        await node.closed.wait()
    assert node.closed_code == 1008
    [error] = node.received
    assert error["type"] == "error" and error["code"] == "UNAUTHORIZED"
    assert [n.node_id for n in await replica.core.list_nodes()] == [n.node_id for n in nodes_before]
    assert replica.runtime.ownership.owned_of("node") == owned_before
    if announced is not None:
        assert (await replica.runtime.ownership.resolve("node", announced))[0] == ""
    return error


async def test_every_refusal_reason_is_exported_at_zero_from_the_start(serve: Serve) -> None:
    served = await serve(auth={"node_secrets": [SECRET_NEW]})
    text = exposition(served.replica)
    for reason in ("missing", "invalid", "expired", "node_id", "languages"):
        assert f'lingua_auth_refusals_total{{endpoint="node",reason="{reason}"}} 0.0' in text
    for reason in ("missing", "invalid", "expired", "origin", "tenant_limit", "pair"):
        assert f'lingua_auth_refusals_total{{endpoint="session",reason="{reason}"}} 0.0' in text


async def test_a_node_without_a_credential_is_refused(serve: Serve, peers: Connect) -> None:
    served = await serve(auth={"node_secrets": [SECRET_NEW]})
    node: SimNode = await peers(SimNode(served.node_url, node_id="node-NOCRED"))
    error = await _refused(node, served.replica, "node-NOCRED")
    assert "credential" in error["message"]
    assert refusals(served.replica, "node", "missing") == 1


async def test_a_node_with_a_wrong_secret_is_refused_and_the_secret_is_not_logged(
    serve: Serve, peers: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    served = await serve(auth={"node_secrets": [SECRET_NEW]})
    wrong = "wrong-secret-ABCDEFGHIJKLMNOP"
    with caplog.at_level(logging.DEBUG):
        node: SimNode = await peers(
            SimNode(f"{served.node_url}?token={wrong}", node_id="node-WRONG")
        )
        await _refused(node, served.replica, "node-WRONG")
    assert refusals(served.replica, "node", "invalid") == 1
    # The daemon's own records, at every level (scheduler.logs keeps the websockets library's
    # logger, which writes request lines with their query string at DEBUG, at WARNING or above).
    records = [r for r in caplog.records if r.name.startswith("lingua")]
    assert any("refused" in r.getMessage() for r in records)
    for record in records:
        assert wrong not in repr(record.__dict__), "the presented credential was logged"
        assert SECRET_NEW not in repr(record.__dict__), "a configured secret was logged"


async def test_during_a_rotation_the_old_and_the_new_secret_are_accepted(
    serve: Serve, peers: Connect
) -> None:
    served = await serve(auth={"node_secrets": [SECRET_OLD, SECRET_NEW]})
    old: SimNode = await peers(SimNode(f"{served.node_url}?token={SECRET_OLD}"))
    await old.register()
    # The new one in the header the issue allows as well (the real node uses the URL).
    new: SimNode = await peers(
        HeaderNode(served.node_url, {"Authorization": f"Bearer {SECRET_NEW}"})
    )
    await new.register()
    assert {n.node_id for n in await served.replica.core.list_nodes()} == {
        old.node_id,
        new.node_id,
    }
    # The rotation ends: the old secret is dropped from the configuration.
    after = await serve(auth={"node_secrets": [SECRET_NEW]})
    late: SimNode = await peers(SimNode(f"{after.node_url}?token={SECRET_OLD}"))
    await _refused(late, after.replica)
    assert refusals(after.replica, "node", "invalid") == 1


async def test_a_token_signed_with_either_key_of_a_rotation_is_accepted(
    serve: Serve, peers: Connect
) -> None:
    served = await serve(auth={"node_token_keys": [KEY_OLD, KEY_NEW]})
    for key in (KEY_OLD, KEY_NEW):
        node: SimNode = await peers(
            SimNode(f"{served.node_url}?token={node_token(key)}", node_id=f"node-{key[:3]}")
        )
        await node.register()
    assert len(await served.replica.core.list_nodes()) == 2
    signed_elsewhere = node_token("another-key-0123456789-0123456789-01")
    stranger: SimNode = await peers(SimNode(f"{served.node_url}?token={signed_elsewhere}"))
    await _refused(stranger, served.replica)
    assert refusals(served.replica, "node", "invalid") == 1


async def test_an_expired_token_is_refused(serve: Serve, peers: Connect) -> None:
    served = await serve(auth={"node_token_keys": [KEY_NEW], "token_leeway_ms": 1000})
    token = node_token(expires_in_s=-5)  # past the leeway
    node: SimNode = await peers(SimNode(f"{served.node_url}?token={token}", node_id="node-OLD"))
    error = await _refused(node, served.replica, "node-OLD")
    assert "expired" in error["message"]
    assert refusals(served.replica, "node", "expired") == 1


async def test_a_session_token_is_not_a_node_credential(serve: Serve, peers: Connect) -> None:
    served = await serve(auth={"node_token_keys": [KEY_NEW], "session_token_keys": [KEY_NEW]})
    node: SimNode = await peers(SimNode(f"{served.node_url}?token={session_token()}"))
    await _refused(node, served.replica)
    assert refusals(served.replica, "node", "invalid") == 1


async def test_a_token_for_another_node_id_is_refused_before_the_id_is_claimed(
    serve: Serve, peers: Connect
) -> None:
    served = await serve(auth={"node_token_keys": [KEY_NEW]})
    token = node_token(node_id="node-AAAA0001")
    node: SimNode = await peers(
        SimNode(f"{served.node_url}?token={token}", node_id="node-BBBB0002")
    )
    await node.send(node.register_message())
    with anyio.fail_after(10):
        await node.closed.wait()
    assert node.closed_code == 1008
    [error] = node.received
    assert error["code"] == "UNAUTHORIZED" and "another node id" in error["message"]
    assert await served.replica.core.list_nodes() == []
    for node_id in ("node-AAAA0001", "node-BBBB0002"):
        assert (await served.replica.runtime.ownership.resolve("node", node_id))[0] == ""
    assert refusals(served.replica, "node", "node_id") == 1


async def test_a_node_without_an_id_registers_as_its_tokens_node_id(
    serve: Serve, peers: Connect
) -> None:
    served = await serve(auth={"node_token_keys": [KEY_NEW]})
    token = node_token(node_id="node-CAFE0001")
    node: SimNode = await peers(SimNode(f"{served.node_url}?token={token}"))  # node_id: null
    await node.register()
    assert node.node_id == "node-CAFE0001"
    # It reconnects with the id it was given, as the real node does: the same token fits.
    again: SimNode = await peers(
        SimNode(f"{served.node_url}?token={token}", node_id="node-CAFE0001")
    )
    await again.register()
    assert [n.node_id for n in await served.replica.core.list_nodes()] == ["node-CAFE0001"]


async def test_a_tokens_languages_trim_what_the_node_serves(serve: Serve, peers: Connect) -> None:
    served = await serve(auth={"node_token_keys": [KEY_NEW]})
    token = node_token(langs=["zh", "en"])
    node: SimNode = await peers(
        SimNode(f"{served.node_url}?token={token}", (["zh", "en", "fr"], ["zh", "en", "fr"]))
    )
    await node.register()
    [info] = await served.replica.core.list_nodes()
    assert sorted(info.asr) == ["en", "zh"] and sorted(info.semantic) == ["en", "zh"]
    pools = {entry.pair for entry in await served.replica.core.list_pools()}
    assert pools == {"zh:en", "en:zh", "zh:zh", "en:en"}  # asr x semantic, no fr
    # A heartbeat announcing the same languages cannot widen them either.
    await node.send(node.heartbeat_message())

    async def heartbeat_seen() -> bool:
        [info] = await served.replica.core.list_nodes()
        return info.reported_load is not None

    await until(heartbeat_seen)
    [info] = await served.replica.core.list_nodes()
    assert sorted(info.asr) == ["en", "zh"] and sorted(info.semantic) == ["en", "zh"]


async def test_a_node_whose_languages_its_token_all_excludes_is_refused(
    serve: Serve, peers: Connect
) -> None:
    served = await serve(auth={"node_token_keys": [KEY_NEW]})
    token = node_token(langs=["fr", "de"])
    node: SimNode = await peers(
        SimNode(f"{served.node_url}?token={token}", (["zh", "en"], ["zh", "en"]), "node-ZHEN")
    )
    await node.send(node.register_message())
    with anyio.fail_after(10):
        await node.closed.wait()
    assert node.closed_code == 1008
    assert await served.replica.core.list_nodes() == []
    assert (await served.replica.runtime.ownership.resolve("node", "node-ZHEN"))[0] == ""
    assert refusals(served.replica, "node", "languages") == 1
