"""The pure limit decisions (scheduler/limits.py): token bucket, per-address counts, the client
address behind proxies, pending jobs; and the default message rates against what the real clients
were recorded sending (tests/realclients/frames)."""

from __future__ import annotations

import pytest

from scheduler.config import ConfigError, LimitsConfig, load_config
from scheduler.limits import (
    AddressCounts,
    TokenBucket,
    client_address,
    message_bucket,
    pending_jobs_within,
    rate_limited_message,
)
from tests.realclients.peers import recorded


def test_a_bucket_allows_its_burst_at_once_then_its_rate() -> None:
    bucket = TokenBucket(rate_per_s=2, burst=3, now_ms=0)
    assert [bucket.take(0) for _ in range(4)] == [True, True, True, False]
    assert bucket.refused == 1
    assert not bucket.take(499)  # half a second: one token is not back yet
    assert bucket.refused == 2
    assert bucket.take(500)
    assert bucket.refused == 0
    assert not bucket.take(500)


def test_a_bucket_refills_to_its_burst_and_no_further() -> None:
    bucket = TokenBucket(rate_per_s=10, burst=2, now_ms=0)
    assert bucket.take(0) and bucket.take(0) and not bucket.take(0)
    assert [bucket.take(60_000) for _ in range(3)] == [True, True, False]


def test_a_clock_stepped_back_refills_nothing() -> None:
    bucket = TokenBucket(rate_per_s=1, burst=1, now_ms=10_000)
    assert bucket.take(10_000)
    assert not bucket.take(5_000)
    assert not bucket.take(5_500)  # measured from the step back: half a token
    assert bucket.take(6_000)


def test_the_rate_limited_sentence_names_the_allowance() -> None:
    text = rate_limited_message(TokenBucket(rate_per_s=20, burst=200, now_ms=0))
    assert "20 per second" in text and "200 at once" in text and text.endswith(".")


def test_address_counts_admit_up_to_the_limit_and_give_places_back() -> None:
    counts = AddressCounts(2)
    assert counts.admit("a") and counts.admit("a") and not counts.admit("a")
    assert counts.admit("b")
    counts.release("a")
    assert counts.open == {"a": 1, "b": 1}
    assert counts.admit("a")
    counts.release("b")
    assert counts.open == {"a": 2}


def test_address_counts_with_no_limit_keep_nothing() -> None:
    counts = AddressCounts(0)
    assert all(counts.admit("a") for _ in range(1000))
    counts.release("a")
    assert counts.open == {}


@pytest.mark.parametrize(
    ("forwarded", "trusted", "expected"),
    [
        (None, 0, "192.0.2.9"),
        ("10.0.0.1", 0, "192.0.2.9"),  # not trusted: anyone can write the header
        (None, 1, "192.0.2.9"),
        ("10.0.0.1", 1, "10.0.0.1"),
        ("6.6.6.6, 10.0.0.1", 1, "10.0.0.1"),  # the left entry is the client's own claim
        ("6.6.6.6, 10.0.0.1, 172.16.0.1", 2, "10.0.0.1"),
        ("10.0.0.1", 2, "192.0.2.9"),  # shorter than the proxies: one was bypassed
        (" , ", 1, "192.0.2.9"),
    ],
)
def test_the_client_address_trusts_only_entries_the_trusted_proxies_appended(
    forwarded: str | None, trusted: int, expected: str
) -> None:
    assert client_address("192.0.2.9", forwarded, trusted) == expected


def test_pending_jobs_count_the_whole_utterance() -> None:
    assert pending_jobs_within(0, 3, 3)
    assert not pending_jobs_within(1, 3, 3)
    assert pending_jobs_within(255, 1, 256) and not pending_jobs_within(256, 1, 256)


@pytest.mark.parametrize(
    ("timeline", "kind"),
    [
        ("browser_manual_cuts.json", "session"),
        ("browser_silence_burst.json", "session"),
        ("node_reconnect_then_result.json", "node"),
    ],
)
def test_the_default_rates_never_refuse_what_the_real_clients_send(
    timeline: str, kind: str
) -> None:
    """Even at a quarter of the default allowance, the recorded clients stay within it."""
    defaults = load_config(environ={}).limits
    tight = LimitsConfig(
        session_messages_per_second=max(1, defaults.session_messages_per_second // 4),
        session_message_burst=max(1, defaults.session_message_burst // 4),
        node_messages_per_second=max(1, defaults.node_messages_per_second // 4),
        node_message_burst=max(1, defaults.node_message_burst // 4),
    )
    sent = [entry["ms"] for entry in recorded(timeline) if entry["dir"] == "out"]
    assert sent
    for config in (defaults, tight):
        bucket = message_bucket(config, kind, 0)
        assert all(bucket.take(ms) for ms in sent), (timeline, config)


def test_pending_jobs_may_not_exceed_what_a_session_remembers() -> None:
    overrides = {"limits": {"pending_jobs_per_session": 65}, "session": {"result_dedup_max": 64}}
    with pytest.raises(ConfigError, match=r"^limits.pending_jobs_per_session: .*result_dedup_max"):
        load_config(environ={}, overrides=overrides)
    overrides["limits"]["pending_jobs_per_session"] = 64
    assert load_config(environ={}, overrides=overrides).limits.pending_jobs_per_session == 64
