"""Real ``lingua-scheduler serve`` processes for end-to-end tests.

Each replica is a child process on a free port, configured through the environment exactly as an
operator would (``LINGUA_REDIS_URL``, ``LINGUA_INSTANCE_ID``, ``LINGUA_<SECTION>__<KEY>``). A Redis
URL that carries credentials and a client certificate (the TLS+ACL server of
tests/security/tls_redis.py) reaches the replica as ``redis.username``, ``redis.password`` and
``redis.tls_*`` keys, as an operator would set them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from cross_instance.redis_server import free_port

__all__ = ["Replica", "redis_settings"]

ROOT = Path(__file__).resolve().parents[2]


# redis-py URL options -> the daemon's config keys.
_TLS_OPTIONS = {
    "ssl_ca_certs": "LINGUA_REDIS__TLS_CA_FILE",
    "ssl_certfile": "LINGUA_REDIS__TLS_CERT_FILE",
    "ssl_keyfile": "LINGUA_REDIS__TLS_KEY_FILE",
}


def redis_settings(url: str) -> dict[str, str]:
    """The environment that points a replica at ``url``: credentials and TLS files as keys."""
    parts = urlsplit(url)
    options = dict(parse_qsl(parts.query))
    settings = {key: options.pop(name) for name, key in _TLS_OPTIONS.items() if name in options}
    if parts.username:
        settings["LINGUA_REDIS__USERNAME"] = unquote(parts.username)
    if parts.password:
        settings["LINGUA_REDIS__PASSWORD"] = unquote(parts.password)
    if not settings:
        return {"LINGUA_REDIS_URL": url}
    host = parts.netloc.rpartition("@")[2]
    settings["LINGUA_REDIS_URL"] = urlunsplit(
        (parts.scheme, host, parts.path, urlencode(options), "")
    )
    return settings


@dataclass
class Replica:
    redis_url: str
    instance_id: str
    key_prefix: str
    settings: dict[str, str] = field(default_factory=dict)
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log_path: str = ""

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 20.0) -> Replica:
        self.port = self.port or free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("LINGUA_")}
        if self.redis_url:  # none: serve starts its embedded Redis, as `make run` does
            env.update(redis_settings(self.redis_url))
        env.update(
            {
                "LINGUA_INSTANCE_ID": self.instance_id,
                "LINGUA_REDIS__KEY_PREFIX": self.key_prefix,
                "LINGUA_SERVER__HOST": "127.0.0.1",
                "LINGUA_SERVER__PORT": str(self.port),
                "LINGUA_LOGGING__LEVEL": "DEBUG",
                "PYTHONPATH": str(ROOT),
                **self.settings,
            }
        )
        fd, self.log_path = tempfile.mkstemp(prefix=f"lingua-{self.instance_id}-", suffix=".log")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "scheduler", "serve"],
            env=env,
            cwd=ROOT,
            stdout=fd,
            stderr=subprocess.STDOUT,
        )
        os.close(fd)
        self.wait_ready(timeout_s)
        return self

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.http + path, timeout=2) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"replica {self.instance_id} exited: {self.log()}")
            try:
                if self.get("/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"replica {self.instance_id} not ready in {timeout_s}s: {self.log()}")

    def log(self, lines: int = 60) -> str:
        try:
            return "\n".join(Path(self.log_path).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def terminate(self, timeout_s: float = 30.0) -> int:
        """SIGTERM (graceful drain) and wait for the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout_s)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time; removes the log."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.log_path:
            Path(self.log_path).unlink(missing_ok=True)
