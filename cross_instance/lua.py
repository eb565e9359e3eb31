"""Load the Lua scripts of ``lua/`` once and call them by name, surviving NOSCRIPT.

A script file is one state transition. Its header declares its keys as ``-- KEYS[i] name ...``
lines; the loader counts them and every call is checked against that count, so a caller can never
pass a key the script does not declare. ``--@include "includes/x.lua"`` lines are replaced by the
included file (once each, in order); a missing or circular include fails loudly at load time.

Calls go out as EVALSHA; on NOSCRIPT (Redis restarted, failed over, SCRIPT FLUSH) the script is
sent once with EVAL, which caches it again on that server, and the reload is counted. A batch of
calls of one script may go out in one round trip (:meth:`ScriptLibrary.call_pipelined`).
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis.exceptions import NoScriptError

__all__ = [
    "LUA_ROOT",
    "Script",
    "ScriptError",
    "ScriptLibrary",
    "ScriptTimer",
    "declared_keys",
    "load_script",
]

LUA_ROOT = Path(__file__).resolve().parent.parent / "lua"
_INCLUDE = re.compile(r'^--@include\s+"([^"]+)"\s*$', re.MULTILINE)
# A header line declaring a key: ``-- KEYS[i] name ...`` (the one parser of these lines).
_KEY_DECL = re.compile(r"^--\s*KEYS\[(\d+)\](?:\s+(\w+))?", re.MULTILINE)


# Told of every script call: the script's name and the call's duration in seconds (a failed call
# too; a pipelined batch once, for the whole round trip). The replica's is a metric.
ScriptTimer = Callable[[str, float], None]


class ScriptError(RuntimeError):
    """A script file is malformed (bad include, key declarations with gaps) or misused."""


@dataclass(frozen=True)
class Script:
    name: str
    source: str
    sha: str
    key_names: tuple[str, ...]  # as the header declares them, in KEYS[i] order

    @property
    def num_keys(self) -> int:
        return len(self.key_names)


def declared_keys(source: str, name: str = "") -> tuple[str, ...]:
    """The key names a script's header (its text before the first blank line) declares, in
    ``KEYS[i]`` order; declarations with gaps are a :class:`ScriptError`."""
    header = source.split("\n\n", 1)[0]
    declared = sorted({(int(i), key) for i, key in _KEY_DECL.findall(header)})
    numbers = [i for i, _ in declared]
    if numbers != list(range(1, len(numbers) + 1)):
        raise ScriptError(f"{name}: KEYS declarations must be 1..n without gaps, got {numbers}")
    return tuple(key for _, key in declared)


def _flatten(path: Path, root: Path, stack: tuple[Path, ...], seen: set[Path]) -> str:
    if path in stack:
        chain = " -> ".join(p.relative_to(root).as_posix() for p in (*stack, path))
        raise ScriptError(f"circular include: {chain}")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        where = stack[-1].relative_to(root).as_posix() if stack else "(top)"
        raise ScriptError(
            f"{where}: include not found: {path.relative_to(root).as_posix()}"
        ) from None

    def replace(match: re.Match[str]) -> str:
        target = (root / match.group(1)).resolve()
        if target in seen and target not in (*stack, path):
            return f"-- (already included: {match.group(1)})"
        seen.add(target)
        return _flatten(target, root, (*stack, path), seen)

    return _INCLUDE.sub(replace, text)


def load_script(path: Path, root: Path = LUA_ROOT) -> Script:
    source = _flatten(path.resolve(), root.resolve(), (), set())
    key_names = declared_keys(source, path.name)
    sha = hashlib.sha1(source.encode()).hexdigest()
    return Script(name=path.stem, source=source, sha=sha, key_names=key_names)


@dataclass
class ScriptLibrary:
    """Every script of one ``lua/`` subfolder, by name."""

    folder: str
    root: Path = LUA_ROOT
    scripts: dict[str, Script] = field(default_factory=dict)
    reloads: int = 0
    timer: ScriptTimer | None = None  # the default of ``call``'s ``timer``

    def __post_init__(self) -> None:
        if not self.scripts:
            for path in sorted((self.root / self.folder).glob("*.lua")):
                script = load_script(path, self.root)
                self.scripts[script.name] = script
        if not self.scripts:
            raise ScriptError(f"no scripts in {self.root / self.folder}")

    async def load(self, client: Any) -> None:
        """Preload every script (SCRIPT LOAD); calls would also load lazily on NOSCRIPT."""
        for script in self.scripts.values():
            await client.script_load(script.source)

    def _checked(self, name: str, keys: Sequence[str]) -> Script:
        script = self.scripts[name]
        if len(keys) != script.num_keys:
            raise ScriptError(f"{name} declares {script.num_keys} keys, called with {len(keys)}")
        return script

    async def call(
        self,
        client: Any,
        name: str,
        keys: Sequence[str],
        args: Sequence[Any],
        *,
        timer: ScriptTimer | None = None,
    ) -> Any:
        """One call of script ``name``; ``timer`` (default: :attr:`timer`) is told its duration."""
        script = self._checked(name, keys)
        started = time.perf_counter()
        try:
            return await client.evalsha(script.sha, len(keys), *keys, *args)
        except NoScriptError:
            self.reloads += 1
            return await client.eval(script.source, len(keys), *keys, *args)
        finally:
            self._timed(timer, name, started)

    def _timed(self, timer: ScriptTimer | None, name: str, started: float) -> None:
        told = timer if timer is not None else self.timer
        if told is not None:
            told(name, time.perf_counter() - started)

    async def call_pipelined(
        self,
        client: Any,
        name: str,
        keys: Sequence[str],
        arg_lists: Sequence[Sequence[Any]],
        *,
        timer: ScriptTimer | None = None,
    ) -> list[Any]:
        """One call of script ``name`` per argument list, in one round trip (a pipeline, not a
        transaction); their raw replies in order. On NOSCRIPT the library is loaded again and
        the pipeline sent once more, so the script must be safe to repeat."""
        script = self._checked(name, keys)

        async def send() -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for args in arg_lists:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            return list(await pipe.execute())

        started = time.perf_counter()
        try:
            return await send()
        except NoScriptError:
            self.reloads += 1
            await self.load(client)
            return await send()
        finally:
            self._timed(timer, name, started)
