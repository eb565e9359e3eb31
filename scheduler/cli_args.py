"""Argument types and shared options of the CLI: bad input is a usage error (exit 2), caught by
the parser before any command touches Redis."""

from __future__ import annotations

import argparse
import re

__all__ = ["add_json", "add_limit", "duration_ms", "pair", "positive_int"]

_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d)?$")
_MS_PER_UNIT = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_PAIR = re.compile(r"^[^:\s]+:[^:\s]+$")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def duration_ms(text: str) -> int:
    """``90``, ``90s``, ``15m``, ``2h``, ``1d``, ``500ms`` -> milliseconds (no unit: seconds)."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"not a duration (e.g. 90s, 15m, 2h): {text!r}")
    return int(match[1]) * _MS_PER_UNIT[match[2] or "s"]


def pair(text: str) -> str:
    """A directed language pair ``src:tgt``."""
    if not _PAIR.match(text):
        raise argparse.ArgumentTypeError(f"not a language pair src:tgt (e.g. en:zh): {text!r}")
    return text


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="one JSON document with raw values (epoch ms, ms)"
    )


def add_limit(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--limit", type=positive_int, default=None, help=help_text)
