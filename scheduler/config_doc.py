"""Render ``docs/configuration.md`` from the config type: the type is the single source.

A test compares the committed file with :func:`render`, so the doc and the type cannot drift;
``make config-doc`` rewrites the file.
"""

from __future__ import annotations

from typing import Any

import msgspec

from scheduler.config import ENV_ALIASES, ENV_PREFIX, Config

__all__ = ["render"]

_INTRO = """\
# Configuration

Every interval, TTL, limit and size the scheduler uses is a key below. This file is generated
from the config type (`make config-doc`); a test fails when the two disagree.

Sources, last wins: defaults < TOML file (`--config FILE` or `LINGUA_CONFIG`) < environment <
command-line flags of `serve`. An environment variable names a key as
`{prefix}<SECTION>__<KEY>`, e.g. `{prefix}SCHEDULING__JOB_TIMEOUT_MS=20000`; list values are
JSON. Short aliases: {aliases}. A bad value stops the start with an error naming the key;
`lingua-scheduler config show` prints the effective config.

Durations are integers in milliseconds (`_ms`), sizes in bytes.
"""


def _default(prop: dict[str, Any]) -> str:
    if "default" not in prop:
        return ""
    value = prop["default"]
    if isinstance(value, str):
        return f'`"{value}"`'
    return f"`{msgspec.json.encode(value).decode()}`"


def _kind(prop: dict[str, Any]) -> str:
    if "enum" in prop:
        return " \\| ".join(f'"{v}"' for v in prop["enum"])
    kind = str(prop.get("type", "any"))
    if kind == "array":
        kind = f"list of {prop.get('items', {}).get('type', 'any')}"
    bounds = []
    if "minimum" in prop:
        bounds.append(f">= {prop['minimum']}")
    if "maximum" in prop:
        bounds.append(f"<= {prop['maximum']}")
    if "pattern" in prop:
        bounds.append(f"matches `{prop['pattern']}`")
    return kind + (f" ({', '.join(bounds)})" if bounds else "")


def render() -> str:
    schema = msgspec.json.schema(Config)
    defs = schema["$defs"]
    aliases = ", ".join(f"`{var}` = `{'.'.join(path)}`" for var, path in ENV_ALIASES.items())
    out = [_INTRO.format(prefix=ENV_PREFIX, aliases=aliases)]
    for section, ref in schema["$defs"]["Config"]["properties"].items():
        struct = defs[ref["$ref"].rsplit("/", 1)[-1]]
        out.append(f"\n## [{section}]\n")
        out.append("| key | type | default | meaning |")
        out.append("| --- | --- | --- | --- |")
        for key, prop in struct["properties"].items():
            text = prop.get("description", "").replace("|", "\\|")
            out.append(f"| `{section}.{key}` | {_kind(prop)} | {_default(prop)} | {text} |")
    return "\n".join(out) + "\n"
