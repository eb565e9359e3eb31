"""Calls of the ``lua/runtime`` scripts: keys from the script's header, reply as (code, data).

Every script replies ``{code}`` or ``{code, json}``; :func:`call_script` returns the code as a
:class:`~cross_instance.errors.RuntimeReply` and the json decoded (``{}`` when absent).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from cross_instance.errors import RuntimeReply
from cross_instance.keys import RuntimeKeys
from cross_instance.lua import ScriptLibrary, ScriptTimer
from cross_instance.redis_client import AnyRedis

__all__ = ["ScriptData", "Scripts", "call_script", "library"]

# A script's decoded json reply: its shape is written in each script's header.
ScriptData = dict[str, Any]

_LIBRARY: ScriptLibrary | None = None


def library() -> ScriptLibrary:
    """The ``lua/runtime`` scripts, loaded from disk once per process."""
    global _LIBRARY
    if _LIBRARY is None:
        _LIBRARY = ScriptLibrary("runtime")
    return _LIBRARY


async def call_script(
    client: AnyRedis,
    keys: RuntimeKeys,
    name: str,
    args: Sequence[str | int],
    *,
    token: str = "",
    kind: str = "",
    message_id: str = "",
    timer: ScriptTimer | None = None,
) -> tuple[RuntimeReply, ScriptData]:
    """Run one ``lua/runtime`` script; its reply as (code, decoded json data). ``timer`` is
    told its duration (the library is shared by every runtime of the process)."""
    scripts = library()
    script = scripts.scripts[name]
    script_keys = keys.for_script(script, token=token, kind=kind, message_id=message_id)
    raw = await scripts.call(client, name, script_keys, args, timer=timer)
    code = RuntimeReply(int(raw[0]))
    data: ScriptData = msgspec.json.decode(raw[1]) if len(raw) > 1 else {}
    return code, data


class Scripts:
    """The runtime's script calls on its main connection (``client`` is set while it runs)."""

    def __init__(self, keys: RuntimeKeys, timer: ScriptTimer | None = None) -> None:
        self.keys = keys
        self.timer = timer  # told the duration of every call (the runtime's metric)
        self.client: AnyRedis | None = None

    @property
    def redis(self) -> AnyRedis:
        if self.client is None:
            raise RuntimeError("the runtime is not running: use `async with runtime:`")
        return self.client

    async def run(
        self,
        name: str,
        args: Sequence[str | int],
        *,
        token: str = "",
        kind: str = "",
        message_id: str = "",
        client: AnyRedis | None = None,
    ) -> tuple[RuntimeReply, ScriptData]:
        target = client if client is not None else self.redis
        return await call_script(
            target,
            self.keys,
            name,
            args,
            token=token,
            kind=kind,
            message_id=message_id,
            timer=self.timer,
        )

    async def run_pipelined(
        self, name: str, arg_lists: Sequence[Sequence[str | int]]
    ) -> list[tuple[RuntimeReply, ScriptData]]:
        """Script ``name`` once per argument list, in one round trip; for scripts whose keys do
        not depend on a token, kind or message id (e.g. ``dead_letter``)."""
        scripts = library()
        script_keys = self.keys.for_script(scripts.scripts[name])
        raws = await scripts.call_pipelined(
            self.redis, name, script_keys, arg_lists, timer=self.timer
        )
        return [
            (RuntimeReply(int(raw[0])), msgspec.json.decode(raw[1]) if len(raw) > 1 else {})
            for raw in raws
        ]
