"""deploy/haproxy.cfg is accepted by `haproxy -c` both as compose runs it (service names that do
not resolve here) and as `make cluster-up` runs it (127.0.0.1 ports). What it routes is checked
against real replicas in tests/cluster/test_local_cluster.py."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.deploy.tools import ROOT, require_tool

CONFIG = ROOT / "deploy" / "haproxy.cfg"


@pytest.mark.parametrize(
    "env",
    [
        {},  # compose: scheduler-N names, resolved at run time
        {
            "LB_PUBLIC_BIND": "127.0.0.1:15010",
            "LB_OPS_BIND": "127.0.0.1:15011",
            "LINGUA_REPLICA_1": "127.0.0.1:15021",
            "LINGUA_REPLICA_2": "127.0.0.1:15022",
            "LINGUA_REPLICA_3": "127.0.0.1:15023",
        },
    ],
    ids=["compose", "local"],
)
def test_haproxy_accepts_the_config(env: dict[str, str]) -> None:
    haproxy = require_tool("haproxy")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("LB_", "LINGUA_REPLICA_"))}
    done = subprocess.run(
        [haproxy, "-c", "-f", str(CONFIG)], env={**clean, **env}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    if env:  # IP literals: nothing to resolve, nothing disabled
        assert "disabling server" not in done.stderr, done.stderr
