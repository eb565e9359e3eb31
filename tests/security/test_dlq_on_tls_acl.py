"""The operator CLI's DLQ commands (list, show, replay, purge) and the runtimes that dead-letter,
against the TLS-only, ACL-only Redis with the daemon's user (tests/security/conftest.py).

The test is tests/runtime/test_cli.py's own, imported so it is the same test. It runs in its own
module, before the e2e module starts its replicas: its runtimes use sub-second presence timings.
"""

from __future__ import annotations

import pytest

from tests.runtime.conftest import start_runtime
from tests.runtime.test_cli import cli, test_ownership_inbox_and_dlq_commands

__all__ = ["cli", "start_runtime", "test_ownership_inbox_and_dlq_commands"]

pytestmark = pytest.mark.anyio
