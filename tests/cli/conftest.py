"""The CLI as an operator runs it: a real ``lingua-scheduler`` process, configured only through
its environment and working directory, against a real Redis, a closed port, or the embedded
Redis of a real ``serve``."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from cross_instance.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]
# The installed console script, as a user types it; `python -m scheduler` when not installed.
_SCRIPT = Path(sys.executable).with_name("lingua-scheduler")
SERVE_KEY_PREFIX = "from-the-run-file"
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "scheduler"]


def clean_env(**settings: str) -> dict[str, str]:
    """The environment without any LINGUA_* setting of the caller, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINGUA_")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(settings)
    return env


def run_cli(
    *argv: str, env: dict[str, str], cwd: Path | str = ROOT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *argv], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


def one_line(stderr: str) -> str:
    """The single line an operational error prints; fails on a traceback or several lines."""
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.fixture
def closed_url() -> str:
    """A Redis URL nothing listens on."""
    return f"redis://127.0.0.1:{free_port()}/0"


@dataclass
class Serve:
    """``serve`` with no Redis configured (``make run``), in its own working directory."""

    cwd: Path
    port: int
    proc: subprocess.Popen[str]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def ready(self) -> bool:
        try:
            url = f"http://127.0.0.1:{self.port}/readyz"
            with urllib.request.urlopen(url, timeout=2) as response:
                return int(response.status) == 200
        except (OSError, urllib.error.HTTPError):
            return False

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            assert self.proc.poll() is None, f"serve exited: {self.log()}"
            assert time.monotonic() < deadline, f"serve not ready: {self.log()}"
            time.sleep(0.05)

    def terminate(self, timeout_s: float = 30.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout_s)


@contextmanager
def serving(workdir: Path, **settings: str) -> Iterator[Serve]:
    """``serve`` with no Redis configured, run from ``workdir/checkout``, until SIGTERM."""
    cwd = workdir / "checkout"
    cwd.mkdir()
    port = free_port()
    log_path = workdir / "serve.log"
    # A key prefix of its own: the commands must take it from the run file.
    env = clean_env(
        LINGUA_SERVER__HOST="127.0.0.1",
        LINGUA_SERVER__PORT=str(port),
        LINGUA_REDIS__KEY_PREFIX=SERVE_KEY_PREFIX,
        **settings,
    )
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scheduler", "serve"],
            env=env,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
    serve = Serve(cwd, port, proc, log_path)
    try:
        serve.wait_ready()
        yield serve
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(cwd, ignore_errors=True)


@pytest.fixture
def embedded_serve(tmp_path: Path) -> Iterator[Serve]:
    with serving(tmp_path) as serve:
        yield serve
