"""The run file of the embedded Redis: how ops commands find what ``make run`` started.

``serve`` with no ``redis.url`` starts its own redis-server on a free port; it writes the URL
with its pid to ``var/run/lingua-scheduler.json`` under its working directory (or under
``$LINGUA_RUN_DIR``) and removes the file at exit. An ops command with no ``redis.url`` looks for
the file there, walking up from its own working directory, and ignores a file whose ``serve``
process is gone (a crash leaves it behind).
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import msgspec

__all__ = ["RUN_DIR_ENV", "RunInfo", "find_live", "publish", "retract", "run_file_path", "searched"]

RUN_DIR_ENV = "LINGUA_RUN_DIR"
_NAME = "lingua-scheduler.json"
_DEFAULT_DIR = Path("var", "run")


class RunInfo(msgspec.Struct, kw_only=True, frozen=True):
    url: str
    pid: int  # of the serve process: the file is stale once it is gone
    redis_pid: int
    key_prefix: str
    started_at: str  # UTC, ISO 8601


def run_file_path(cwd: Path | None = None) -> Path:
    """Where ``serve`` (run from ``cwd``) writes its run file."""
    base = os.environ.get(RUN_DIR_ENV)
    if base:
        return Path(base) / _NAME
    return (cwd or Path.cwd()) / _DEFAULT_DIR / _NAME


def _candidates(cwd: Path | None = None) -> list[Path]:
    if os.environ.get(RUN_DIR_ENV):
        return [run_file_path()]
    here = (cwd or Path.cwd()).resolve()
    return [d / _DEFAULT_DIR / _NAME for d in (here, *here.parents)]


def searched() -> str:
    """Where :func:`find_live` looks, for an error message."""
    if os.environ.get(RUN_DIR_ENV):
        return f"no live {run_file_path()}"
    return f"no live {_DEFAULT_DIR / _NAME} in {Path.cwd()} or its parents"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _read(path: Path) -> RunInfo | None:
    try:
        return msgspec.json.decode(path.read_bytes(), type=RunInfo)
    except (OSError, msgspec.DecodeError):
        return None


def find_live(cwd: Path | None = None) -> tuple[RunInfo, Path] | None:
    """The nearest run file whose ``serve`` is still running, with its path."""
    for path in _candidates(cwd):
        info = _read(path)
        if info is not None and _alive(info.pid):
            return info, path
    return None


def publish(url: str, redis_pid: int, key_prefix: str) -> Path | None:
    """Write this process's run file; None when another live ``serve`` already owns it (the
    first one started keeps it, so a test run beside ``make run`` does not hide it) or it cannot
    be written (a read-only directory must not stop serve)."""
    path = run_file_path()
    current = _read(path)
    if current is not None and current.pid != os.getpid() and _alive(current.pid):
        return None
    info = RunInfo(
        url=url,
        pid=os.getpid(),
        redis_pid=redis_pid,
        key_prefix=key_prefix,
        started_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial.write_bytes(msgspec.json.encode(info) + b"\n")
        os.replace(partial, path)  # readers never see half a file
    except OSError:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        return None
    return path


def retract(path: Path) -> None:
    """Remove the run file if it is still ours."""
    info = _read(path)
    if info is not None and info.pid == os.getpid():
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
