"""``lingua-scheduler serve``: start a replica.

Until the gateways land (issue 4) a replica starts Redis (embedded when ``redis.url`` is empty),
loads the scheduling scripts and answers the HTTP health routes on its port.
"""

from __future__ import annotations

import argparse
import logging
import signal
from http import HTTPStatus
from typing import Any

import anyio
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from cross_instance.lua import ScriptLibrary
from cross_instance.redis_client import connect
from cross_instance.redis_server import RedisServerProcess
from scheduler.config import Config

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
    cmd = sub.add_parser("serve", help="start a scheduler replica")
    cmd.add_argument("--host")
    cmd.add_argument("--port", type=int)
    cmd.add_argument("--redis-url", dest="redis_url")
    cmd.add_argument("--instance-id", dest="instance_id")
    cmd.set_defaults(func=_serve_command, config_overrides=_overrides)


def _serve_command(args: argparse.Namespace, config: Config) -> int:
    logging.basicConfig(
        level=config.logging.level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    anyio.run(run, config, backend="asyncio", backend_options={"use_uvloop": True})
    return 0


async def run(config: Config) -> None:
    embedded: RedisServerProcess | None = None
    url = config.redis.url
    if not url:
        embedded = RedisServerProcess(
            binary=config.redis.embedded_binary,
            port=config.redis.embedded_port,
            start_timeout_s=config.redis.embedded_start_timeout_ms / 1000,
        ).start()
        url = embedded.url
        log.info("embedded redis-server started at %s (pid %s)", url, embedded.pid)
    client = connect(config.redis, url)
    try:
        library = ScriptLibrary("scheduling")
        await library.load(client)

        def health(connection: ServerConnection, request: Request) -> Response | None:
            if request.path in ("/health", "/livez", "/readyz"):
                return connection.respond(HTTPStatus.OK, "OK\n")
            return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")

        async with serve(
            lambda ws: ws.close(), config.server.host, config.server.port, process_request=health
        ):
            log.info(
                "listening on %s:%s (scheduling core only: WebSocket gateways not built yet)",
                config.server.host,
                config.server.port,
            )
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    break
    finally:
        await client.aclose()
        if embedded is not None:
            embedded.stop()
