"""Logs: one JSON object per line, the traceback inside it as ``exc``, ``instance_id`` on every
line, for logged exceptions and for ones nobody caught (a real interpreter, as serve runs)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.cli.conftest import ROOT, clean_env

PROGRAM = """
import logging, threading, warnings
from scheduler.config import LoggingConfig
from scheduler.logs import setup_logging

setup_logging(LoggingConfig(), "r-1")
log = logging.getLogger("lingua.test")
try:
    {}["missing"]
except KeyError:
    log.exception("lookup failed", extra={"node_id": "n1", "instance": "r-1@e"})
warnings.warn("careful")
thread = threading.Thread(target=lambda: 1 / 0, name="worker")
thread.start()
thread.join()
raise RuntimeError("nobody caught this")
"""


def test_exceptions_and_warnings_go_out_as_one_json_line_each() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM], env=clean_env(), cwd=ROOT, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    entries = [json.loads(line) for line in done.stderr.splitlines()]
    assert [e["msg"] for e in entries if e["logger"] != "py.warnings"] == [
        "lookup failed", "uncaught exception in thread worker", "uncaught exception"
    ]  # fmt: skip
    assert len(entries) == 4
    assert all(e["instance_id"] == "r-1" for e in entries)
    logged, warned, in_thread, uncaught = entries
    assert logged["exc"].startswith("Traceback") and "KeyError: 'missing'" in logged["exc"]
    assert (logged["node_id"], logged["instance"], logged["level"]) == ("n1", "r-1@e", "ERROR")
    assert "UserWarning: careful" in warned["msg"] and warned["logger"] == "py.warnings"
    assert "ZeroDivisionError" in in_thread["exc"]
    assert uncaught["level"] == "CRITICAL" and "RuntimeError: nobody caught this" in uncaught["exc"]
