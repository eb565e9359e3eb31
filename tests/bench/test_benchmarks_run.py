"""Each benchmark of ``make bench`` runs to the end, at a tiny size.

No figure is asserted (speed belongs in the benchmarks' own output, docs/benchmarks.md); what is
checked is that a change elsewhere does not stop them: bench-e2e once died on the session message
rate limit, which its closed-loop speakers meet, and nothing noticed until ``make bench``.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.e2e.daemons import ROOT

pytestmark = pytest.mark.e2e

TINY = {
    "bench_lua": ["--sizes", "10", "--pairs", "1,100", "--decisions", "100", "--concurrency", "2"],
    "bench_runtime": ["--messages", "100", "--local-messages", "200", "--concurrency", "1,4"],
    # past the speakers' message burst (200): the rate limit must not stop them
    "bench_e2e": ["--utterances", "150", "--concurrency", "1"],
}


@pytest.mark.parametrize("module", sorted(TINY))
def test_the_benchmark_runs_to_the_end(module: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", f"tests.bench.{module}", *TINY[module]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
