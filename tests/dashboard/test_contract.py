"""The page and the API share one model: every field the page reads exists in ClusterView's JSON
schema, and the page reads nothing it did not declare."""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any

import msgspec
import pytest

from scheduler.cluster_view import ClusterView

PAGE = resources.files("scheduler").joinpath("dashboard.html").read_text()
SCHEMA = msgspec.json.schema(ClusterView)


def declared_fields() -> list[str]:
    block = re.search(
        r'<script type="application/json" id="model-fields">(.*?)</script>', PAGE, re.S
    )
    assert block, "the page declares the fields it reads in a model-fields block"
    fields = json.loads(block.group(1))
    assert isinstance(fields, list) and fields
    return fields


def script() -> str:
    scripts = re.findall(r"<script>(.*?)</script>", PAGE, re.S)
    assert len(scripts) == 1
    return scripts[0]


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = SCHEMA["$defs"][schema["$ref"].rsplit("/", 1)[1]]
    if "anyOf" in schema:  # optional: int | None
        [schema] = [s for s in schema["anyOf"] if s.get("type") != "null"] or [schema]
    return schema


def schema_at(path: str) -> dict[str, Any]:
    """The JSON schema of ``path`` ("dlq.entries[].reason") in ClusterView; KeyError if absent."""
    node = _resolve(SCHEMA)
    for part in path.split("."):
        name, rows = (part[:-2], True) if part.endswith("[]") else (part, False)
        node = _resolve(node["properties"][name])
        if rows:
            assert node["type"] == "array", path
            node = _resolve(node["items"])
    return node


@pytest.mark.parametrize("path", declared_fields())
def test_every_declared_field_exists_in_the_model(path: str) -> None:
    try:
        schema_at(path)
    except KeyError as exc:
        pytest.fail(f"the page reads {path!r}, which ClusterView does not have ({exc})")


def test_the_schema_walk_rejects_a_field_the_model_lacks() -> None:
    # The field names the page used to read before the model existed.
    for stale in ("total_dlq", "replicas[].nodes_owned", "nodes[].max_jobs", "nodes[].alive"):
        with pytest.raises(KeyError):
            schema_at(stale)


def test_the_page_reads_only_declared_fields() -> None:
    js = script()
    declared = set(declared_fields())
    used = set(re.findall(r'field\(\s*\w+,\s*"([^"]+)"\s*\)', js))
    # Table columns and cards: ["header", "path", ...].
    used |= set(re.findall(r'\[\s*"[^"]+",\s*"([a-z_]+(?:\[\])?(?:\.[a-z_]+(?:\[\])?)*)"', js))
    # Row keys passed to table(...).
    used |= set(re.findall(r'\],\s*[^,\]]+,\s*"([^"]+)"(?:,\s*\w+)?\);', js))
    assert len(used) > 40, sorted(used)  # the extraction found the page's reads
    assert used <= declared, sorted(used - declared)
    # Anything read from the view goes through field(): no dotted access on the view object.
    assert not re.findall(r"\b(?:view|row)\.(?!message\b)[a-z_]", js), "read through field()"


def test_the_page_never_builds_markup_from_strings() -> None:
    js = script()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in js, sink
