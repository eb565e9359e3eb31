"""``make run`` in one terminal, ops commands in another: the embedded Redis of a real ``serve``
is found through its run file, with no configuration at all."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from scheduler.run_file import RunInfo, find_live
from tests.cli.conftest import SERVE_KEY_PREFIX, Serve, clean_env, one_line, run_cli, serving

RUN_FILE = Path("var", "run", "lingua-scheduler.json")


def test_ops_commands_find_the_embedded_redis_of_a_running_serve(embedded_serve: Serve) -> None:
    run_file = embedded_serve.cwd / RUN_FILE
    written = json.loads(run_file.read_text())
    assert written["pid"] == embedded_serve.proc.pid
    assert written["url"].startswith("redis://127.0.0.1:") and written["started_at"]
    assert written["key_prefix"] == SERVE_KEY_PREFIX

    subdir = embedded_serve.cwd / "docs"  # found from below the directory too, as git does
    subdir.mkdir()
    for cwd in (embedded_serve.cwd, subdir):
        nodes = run_cli("nodes", env=clean_env(), cwd=cwd)
        assert nodes.returncode == 0, nodes.stderr
        assert nodes.stdout.split() == [
            "NODE", "GEN", "RUNNING", "MAX", "ALIVE_UNTIL", "IN_POOLS", "ASR", "SEMANTIC"
        ]  # fmt: skip
    ownership = run_cli("ownership", env=clean_env(), cwd=embedded_serve.cwd)
    assert ownership.returncode == 0, ownership.stderr
    header, row = ownership.stdout.splitlines()
    assert header.split()[:6] == ["INSTANCE", "EPOCH", "STATE", "DRAINING", "STARTED", "REFRESHED"]
    assert re.search(r" live +no +\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ +\d+(ms|s) ago ", row), row
    [replica] = json.loads(
        run_cli("ownership", "--json", env=clean_env(), cwd=embedded_serve.cwd).stdout
    )["replicas"]
    assert isinstance(replica["presence_age_ms"], int) and isinstance(replica["started_ms"], int)

    # Every line serve logged is JSON and carries the id it generated (none was configured).
    lines = [json.loads(line) for line in embedded_serve.log().splitlines()]
    assert {entry["instance_id"] for entry in lines} == {replica["instance_id"]}

    assert embedded_serve.terminate() == 0
    assert not run_file.exists()  # removed at exit
    after = run_cli("nodes", env=clean_env(), cwd=embedded_serve.cwd)
    assert after.returncode == 3 and "make run" in one_line(after.stderr)


def test_a_run_file_whose_serve_is_gone_is_ignored(tmp_path: Path) -> None:
    gone = RunInfo(url="redis://127.0.0.1:1/0", pid=_dead_pid(), redis_pid=0, key_prefix="lingua",
                   started_at="2026-01-01T00:00:00Z")  # fmt: skip
    path = tmp_path / RUN_FILE
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({f: getattr(gone, f) for f in gone.__struct_fields__}))
    assert find_live(tmp_path) is None
    done = run_cli("nodes", env=clean_env(), cwd=tmp_path)
    assert done.returncode == 3 and "no running 'make run'" in one_line(done.stderr)


def test_the_run_dir_can_be_named(tmp_path: Path) -> None:
    alive = RunInfo(url="redis://127.0.0.1:1/0", pid=os.getpid(), redis_pid=0,
                    key_prefix="lingua", started_at="2026-01-01T00:00:00Z")  # fmt: skip
    (tmp_path / "lingua-scheduler.json").write_text(
        json.dumps({f: getattr(alive, f) for f in alive.__struct_fields__})
    )
    done = run_cli("nodes", env=clean_env(LINGUA_RUN_DIR=str(tmp_path)), cwd="/")
    # Found (its Redis is not there): the error names the URL and the run file it came from.
    assert done.returncode == 3
    line = one_line(done.stderr)
    assert "redis://127.0.0.1:1/0" in line and str(tmp_path / "lingua-scheduler.json") in line


def test_serve_runs_on_when_its_run_file_cannot_be_written(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "a-file"
    not_a_dir.write_text("")
    with serving(tmp_path, LINGUA_RUN_DIR=str(not_a_dir / "run")) as serve:
        [started] = [
            json.loads(line)["msg"]
            for line in serve.log().splitlines()
            if "embedded redis-server started" in line
        ]
        assert "ops commands will not find it" in started
        assert "LINGUA_REDIS_URL=redis://127.0.0.1:" in started
        assert serve.terminate() == 0


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid
