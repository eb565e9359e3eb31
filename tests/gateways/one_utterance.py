"""``python -m tests.gateways.one_utterance URL PREFIX on|off``: a replica without OpenTelemetry.

OpenTelemetry is made uninstalled first (every import of it fails, as after ``make run``, which
installs no tracing extra) and each module that tries to import it is recorded. Then one
replica runs in this process on the Redis at URL (keys under PREFIX), tracing on or off, and
takes one utterance from a simulated browser to a simulated node and back. Prints, as JSON, the
modules of ``scheduler`` and ``cross_instance`` that tried the import, and the error that ended
the run ("" when none). Run by tests/gateways/test_untraced.py in a fresh interpreter.

(Only our own modules count: a library may look for OpenTelemetry itself and do without it,
as redis-py does for its optional metrics.)
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType

OURS = ("scheduler", "cross_instance")


class NoOpenTelemetry(importlib.abc.MetaPathFinder):
    """Every ``opentelemetry`` import fails; who tried is kept in ``importers``."""

    def __init__(self) -> None:
        self.importers: set[str] = set()

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname.partition(".")[0] != "opentelemetry":
            return None
        frame = sys._getframe(1)
        while frame is not None:
            name = str(frame.f_globals.get("__name__", ""))
            if not name.startswith(("importlib", "_frozen_importlib")) and name != __name__:
                self.importers.add(name)
                break
            frame = frame.f_back  # type: ignore[assignment]
        raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)


async def one_utterance(url: str, prefix: str, tracing: bool) -> None:
    import anyio

    from cross_instance.redis_client import connect
    from cross_instance.redis_server import free_port
    from scheduler.config import load_config
    from scheduler.replica import Replica
    from tests.e2e.clients import SimBrowser, SimNode

    port = free_port()
    config = load_config(
        environ={},
        overrides={
            "server": {"host": "127.0.0.1", "port": port, "drain_unready_ms": 0},
            "redis": {"url": url, "key_prefix": prefix},
            "runtime": {"instance_id": f"untraced-{prefix}", "inbox_block_ms": 100},
            "session": {"hangover_manual_ms": 0, "hangover_auto_ms": 0},
            "tracing": {"enabled": tracing},
        },
    )
    redis = connect(config.redis)
    base = f"ws://127.0.0.1:{port}"
    node = SimNode(base + "/ws/node", (["zh"], ["en"]))
    browser = SimBrowser(base + "/ws/session", "zh", "en")
    try:
        replica = Replica(config, redis)
        async with anyio.create_task_group() as tg:
            await tg.start(replica.run)
            for peer in (node, browser):
                await peer.connect()
                tg.start_soon(peer.pump)
            await node.register()
            await browser.init()
            await browser.speak(10)
            job = await node.wait_type("job_assign")
            await node.send(node.result_for(job))
            await browser.wait_type("translation_result", job_id=job["job_id"])
            for peer in (node, browser):
                await peer.close()
            replica.stop()
    finally:
        await redis.aclose()


def main() -> None:
    url, prefix, tracing = sys.argv[1:4]
    blocker = NoOpenTelemetry()
    sys.meta_path.insert(0, blocker)
    import anyio
    import orjson

    error = ""
    try:
        anyio.run(one_utterance, url, prefix, tracing == "on", backend="asyncio")
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    ours = sorted(name for name in blocker.importers if name.partition(".")[0] in OURS)
    print(orjson.dumps({"importers": ours, "error": error}).decode())


if __name__ == "__main__":
    main()
