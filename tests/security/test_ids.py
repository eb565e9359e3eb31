"""Session and job ids are unguessable: 128 random bits each (issue 14 item 2)."""

from __future__ import annotations

import re

from scheduler.ids import new_job_id, new_session_id

SAMPLES = 2000


def _random_bits(ids: list[str], prefix: str) -> int:
    """The bits an id's random part spans, after checking every sample has the same shape
    and that every bit position takes both values (no constant version or variant bits)."""
    digits = {i.removeprefix(prefix) for i in ids}
    assert len(digits) == len(ids), "an id repeated"
    [width] = {len(d) for d in digits}
    assert all(re.fullmatch(r"[0-9A-Fa-f]+", d) for d in digits)
    values = [int(d, 16) for d in digits]
    bits = width * 4
    ones = 0
    zeros = 0
    for v in values:
        ones |= v
        zeros |= ~v & ((1 << bits) - 1)
    varying = ones & zeros  # positions seen both as 1 and as 0
    return bin(varying).count("1")


def test_a_session_id_has_128_random_bits() -> None:
    ids = [new_session_id() for _ in range(SAMPLES)]
    assert all(i.startswith("s-") for i in ids)
    assert _random_bits(ids, "s-") >= 128


def test_a_job_id_has_128_random_bits() -> None:
    # A uuid4 has 6 fixed bits (version and variant): 122 random bits, which this refuses.
    ids = [new_job_id() for _ in range(SAMPLES)]
    assert all(i.startswith("job-") for i in ids)
    assert _random_bits(ids, "job-") >= 128
