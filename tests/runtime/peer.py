"""A runtime in its own process, for the multi-replica tests.

It claims the nodes it is given, prints ``READY <token>``, and records every successful delivery
as JSON ``{instance, message_id, kind, target}`` on the Redis list ``<prefix>:test:deliveries``.
Handler behaviour by payload: ``hang`` blocks forever (the test kills the process mid-handler),
``fail`` raises, ``slow`` takes 200 ms. SIGTERM drains the runtime and exits 0.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys

import anyio
import msgspec

from cross_instance.config import RedisConfig, RuntimeConfig
from cross_instance.envelope import Envelope
from cross_instance.redis_client import connect
from cross_instance.runtime import Runtime


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--nodes", default="")
    args = parser.parse_args(argv)
    redis_config = RedisConfig(url=args.url, key_prefix=args.prefix)
    config = msgspec.convert(json.loads(args.config), RuntimeConfig)
    client = connect(redis_config)
    log_key = f"{args.prefix}:test:deliveries"
    stop = anyio.Event()

    async def handler(envelope: Envelope) -> None:
        if envelope.payload == "hang":
            await anyio.sleep_forever()
        if envelope.payload == "fail":
            raise LookupError("not here")
        if envelope.payload == "slow":
            await anyio.sleep(0.2)
        record = {
            "instance": config.instance_id,
            "message_id": envelope.message_id,
            "kind": envelope.kind,
            "target": envelope.target_id,
        }
        await client.rpush(log_key, json.dumps(record))

    async def drain_requested() -> None:
        stop.set()

    runtime = Runtime(redis_config, config, handler, on_drain_requested=drain_requested)
    async with runtime, anyio.create_task_group() as tg:

        async def signals() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM) as received:
                async for _ in received:
                    stop.set()
                    return

        tg.start_soon(signals)
        for node in filter(None, args.nodes.split(",")):
            await runtime.claim_node(node)
        print(f"READY {runtime.token}", flush=True)
        await stop.wait()
        await runtime.drain()
        tg.cancel_scope.cancel()
    await client.aclose()
    return 0


if __name__ == "__main__":
    sys.exit(anyio.run(main, sys.argv[1:], backend_options={"use_uvloop": True}))
