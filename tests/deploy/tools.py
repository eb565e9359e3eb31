"""External tools the deploy and cluster tests run (Debian packages that `.ci/run` installs).

A missing tool fails the test with the command that installs it: these tests are the only check
of the shipped configs, so they must not pass by being skipped.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

__all__ = ["ROOT", "require_tool"]

ROOT = Path(__file__).resolve().parents[2]

_PACKAGES = {"haproxy": "haproxy", "promtool": "prometheus", "redis-server": "redis-server"}


def require_tool(name: str) -> str:
    """The path of ``name`` on PATH, or fail the test saying how to install it."""
    found = shutil.which(name)
    if found is None:
        package = _PACKAGES.get(name, name)
        pytest.fail(
            f"{name} is not installed: apt-get install --no-install-recommends {package} "
            f"(Debian/Ubuntu; .ci/run installs it)",
            pytrace=False,
        )
    return found
