"""The processes of a chaos run: one Redis with AOF on, three ``serve`` replicas, and their faults.

Replicas run with the default configuration (``LINGUA_*`` from the environment is not inherited),
on free ports, logging to ``var/chaos/<scenario>/<instance>.log`` so a failing run can be read
afterwards. ``module`` lets the self-test start a deliberately broken build
(:mod:`tests.chaos.broken`) instead of ``python -m scheduler``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from redis import Redis

from cross_instance.redis_server import RedisServerProcess, free_port
from tests.e2e.daemons import ROOT, Replica

__all__ = ["ChaosRedis", "ChaosReplica", "Cluster"]

OUT = ROOT / "var" / "chaos"


class ChaosRedis(RedisServerProcess):
    """A redis-server with AOF on (fsync every second): a restart keeps the data."""

    def __init__(self) -> None:
        super().__init__(extra_args=["--appendonly", "yes", "--appendfsync", "everysec"])

    def client(self) -> Redis:
        return Redis(host=self.host, port=self.port, socket_timeout=5)

    def restart_after(self, down_s: float) -> None:
        """Stop (SIGTERM: AOF flushed), stay down ``down_s``, start on the same port and data."""
        workdir, owns = self.workdir, self._owns_workdir
        self._owns_workdir = False
        self.stop()
        time.sleep(down_s)
        self.workdir, self._owns_workdir = workdir, owns
        self.start()

    def pause(self, ms: int) -> None:
        """``CLIENT PAUSE <ms> ALL``: every client's commands wait (Redis looks stalled)."""
        with self.client() as client:
            client.execute_command("CLIENT", "PAUSE", str(ms), "ALL")


@dataclass
class ChaosReplica(Replica):
    module: str = "scheduler"
    extra_env: dict[str, str] = field(default_factory=dict)

    def launch(self, log_dir: Path) -> None:
        """Start the process; :meth:`wait_ready` waits for it."""
        self.port = self.port or free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("LINGUA_")}
        env.update(
            {
                "LINGUA_REDIS_URL": self.redis_url,
                "LINGUA_INSTANCE_ID": self.instance_id,
                "LINGUA_REDIS__KEY_PREFIX": self.key_prefix,
                "LINGUA_SERVER__HOST": "127.0.0.1",
                "LINGUA_SERVER__PORT": str(self.port),
                "PYTHONPATH": str(ROOT),
                **self.settings,
                **self.extra_env,
            }
        )
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = str(log_dir / f"{self.instance_id}.log")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.module, "serve"],
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self) -> None:
        """Teardown: SIGCONT (it may be stopped), then SIGKILL; the log stays."""
        if self.alive:
            self.signal(signal.SIGCONT)
            self.kill()


@dataclass
class Cluster:
    redis: ChaosRedis
    replicas: list[ChaosReplica]
    prefix: str

    @classmethod
    def start(
        cls,
        scenario: str,
        *,
        size: int = 3,
        settings: dict[str, str] | None = None,
        module: str = "scheduler",
        extra_env: dict[str, str] | None = None,
    ) -> Cluster:
        redis = ChaosRedis().start()
        prefix = f"chaos-{scenario}"
        replicas = [
            ChaosReplica(
                redis.url,
                f"r{i}",
                prefix,
                dict(settings or {}),
                module=module,
                extra_env=dict(extra_env or {}),
            )
            for i in range(size)
        ]
        log_dir = OUT / scenario
        try:
            for replica in replicas:
                replica.launch(log_dir)
            for replica in replicas:
                replica.wait_ready(30.0)
        except Exception:
            for replica in replicas:
                replica.stop()
            redis.stop()
            raise
        return cls(redis, replicas, prefix)

    @property
    def urls(self) -> list[str]:
        return [r.ws for r in self.replicas]

    def by_instance(self, instance_id: str) -> ChaosReplica:
        return next(r for r in self.replicas if r.instance_id == instance_id)

    def stop(self) -> None:
        for replica in self.replicas:
            replica.stop()
        self.redis.stop()
