"""``lingua-scheduler serve``: start a replica.

With no ``redis.url`` configured, a redis-server child process is started first (the zero-setup
local run of ``make run``) and stopped when the replica exits; its run file
(:mod:`scheduler.run_file`) lets ops commands find it meanwhile. Start-up failures (Redis
unreachable, a bad URL) are reported by :func:`scheduler.cli.main` as one JSON log line, exit 3.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import anyio
import msgspec

from cross_instance.ids import default_instance_id
from cross_instance.redis_client import connect
from cross_instance.redis_server import RedisServerProcess
from scheduler import run_file
from scheduler.config import Config
from scheduler.logs import setup_logging

__all__ = ["register", "run"]

log = logging.getLogger("lingua.serve")


def _overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    if args.host is not None:
        out.setdefault("server", {})["host"] = args.host
    if args.port is not None:
        out.setdefault("server", {})["port"] = args.port
    if args.redis_url is not None:
        out.setdefault("redis", {})["url"] = args.redis_url
    if args.instance_id is not None:
        out.setdefault("runtime", {})["instance_id"] = args.instance_id
    return out


def register(sub: Any) -> None:
    text = "start a scheduler replica (drains and exits 0 on SIGTERM / SIGINT)"
    cmd = sub.add_parser("serve", help=text, description=text)
    cmd.add_argument("--host", help="address to listen on (server.host)")
    cmd.add_argument("--port", type=int, help="port of /ws/*, /metrics and /api (server.port)")
    cmd.add_argument(
        "--redis-url", dest="redis_url",
        help="redis://, rediss:// or unix:// URL (redis.url); none: start an embedded Redis",
    )  # fmt: skip
    cmd.add_argument(
        "--instance-id", dest="instance_id",
        help="replica id, e.g. the pod name (runtime.instance_id); none: HOSTNAME-pid-random",
    )  # fmt: skip
    cmd.set_defaults(func=_serve_command, config_overrides=_overrides)


def _serve_command(args: argparse.Namespace, config: Config) -> int:
    anyio.run(run, config, backend="asyncio", backend_options={"use_uvloop": True})
    return 0


async def run(config: Config) -> None:
    """Run one replica until SIGTERM/SIGINT, then drain and return."""
    from scheduler.replica import Replica

    if not config.runtime.instance_id:
        # The runtime would generate one itself; generated here, every log line carries it.
        runtime = msgspec.structs.replace(config.runtime, instance_id=default_instance_id())
        config = msgspec.structs.replace(config, runtime=runtime)
    setup_logging(config.logging, config.runtime.instance_id)
    embedded: RedisServerProcess | None = None
    published: Path | None = None
    url = config.redis.url
    if not url and config.redis.mode == "standalone":  # sentinel mode finds its master itself
        embedded = RedisServerProcess(
            binary=config.redis.embedded_binary,
            port=config.redis.embedded_port,
            start_timeout_s=config.redis.embedded_start_timeout_ms / 1000,
        ).start()
        url = embedded.url
        config = msgspec.structs.replace(
            config, redis=msgspec.structs.replace(config.redis, url=url)
        )
        published = run_file.publish(url, embedded.pid or 0, config.redis.key_prefix)
        log.info(
            "no redis.url configured: embedded redis-server started at %s (pid %s); %s",
            url,
            embedded.pid,
            f"ops commands find it through {published}"
            if published
            else f"ops commands will not find it ({run_file.run_file_path()} belongs to another "
            f"running serve or cannot be written): give them LINGUA_REDIS_URL={url}",
        )
    client = connect(config.redis)
    try:
        await Replica(config, client).run()
    finally:
        with anyio.CancelScope(shield=True):
            await client.aclose()
            if published is not None:
                run_file.retract(published)
            if embedded is not None:
                embedded.stop()
