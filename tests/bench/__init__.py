"""Shared helpers of the benchmarks (``make bench``)."""

import argparse


def concurrency_levels(text: str) -> list[int]:
    """``--concurrency 1,16``: comma-separated positive ints."""
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"concurrency levels must be positive ints: {text!r}")
    return values
