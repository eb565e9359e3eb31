"""The chaos table from the suite's own output: ``python -m tests.chaos.report [--out FILE]``.

Reads ``var/chaos/<scenario>.json`` (written by every run of ``tests/chaos``) and prints the
Markdown table of docs/reliability.md, one row per scenario in the suite's order.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from tests.chaos.cluster import OUT
from tests.chaos.scenarios import SCENARIOS

__all__ = ["main", "table"]

ORDER = [*SCENARIOS, "broken_build"]
COLUMNS = [
    ("scenario", "scenario"),
    ("fault", "fault"),
    ("cut", "utterances cut"),
    ("completed", "completed"),
    ("errored", "explicit errors"),
    ("severed", "severed (1006)"),
    ("lost", "lost"),
    ("duplicated", "duplicated"),
    ("leaked_slots", "leaked slots"),
    ("merged", "cuts merged"),
    ("split", "cuts split"),
    ("recovery_s", "recovery (s)"),
    ("worst_latency_s", "worst latency (s)"),
    ("audit_clean", "audit"),
    ("promise_holds", "promise"),
]


def _cell(key: str, value: Any) -> str:
    if key == "promise_holds":
        return "PASS" if value else "**FAIL**"
    if key == "audit_clean" and value is not None:
        return "clean" if value else "**VIOLATION**"
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def table(summaries: list[dict[str, Any]]) -> str:
    lines = [
        "| " + " | ".join(title for _, title in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for s in summaries:
        lines.append("| " + " | ".join(_cell(k, s.get(k)) for k, _ in COLUMNS) + " |")
    load = {s["load"] for s in summaries}
    lines.append("")
    lines.append("Load: " + "; ".join(sorted(load)) + ".")
    lines.append("")
    for s in summaries:
        lines.append(f"- `{s['scenario']}`: `{s['command']}`")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", help="write the table here instead of stdout")
    args = parser.parse_args(argv)
    found = {p.stem: json.loads(p.read_text()) for p in OUT.glob("*.json")}
    if not found:
        print(
            f"no chaos summaries in {OUT}: run `python -m pytest tests/chaos` first",
            file=sys.stderr,
        )
        return 1
    ordered = [found[n] for n in ORDER if n in found] + [
        v for k, v in sorted(found.items()) if k not in ORDER
    ]
    text = table(ordered) + "\n"
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
