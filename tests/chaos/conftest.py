"""The chaos suite runs only when asked for (``python -m pytest tests/chaos``, ``make chaos``).

It starts its own Redis and replicas per scenario and takes minutes, so the default run
(``make test``: ``pytest`` over ``testpaths``) does not collect it: not skipped, not collected.
The fast tests of the accounting itself (``test_accounting.py``) are collected either way.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def _asked_for(config: pytest.Config) -> bool:
    for arg in config.args:
        path = Path(config.invocation_params.dir, arg.split("::")[0]).resolve()
        if path == HERE or HERE in path.parents:
            return True
    return False


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if collection_path.name == "test_scenarios.py" and not _asked_for(config):
        return True
    return None
