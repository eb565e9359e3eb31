"""The pure decisions of scheduler.auth: which pairs a session token allows, which id and
languages a node token allows."""

from __future__ import annotations

import pytest

from scheduler import protocol as wire
from scheduler.auth import (
    NodeGrant,
    Refusal,
    SessionGrant,
    allowed_targets,
    node_registration,
    requested_pairs_allowed,
)
from scheduler.scheduling.types import NodeCapabilities


def _init(src: str, tgt: str, **extra: str) -> wire.SessionInit:
    return wire.SessionInit(client_version="v", platform="web", src_lang=src, tgt_lang=tgt, **extra)


def _grant(*pairs: str) -> SessionGrant:
    return SessionGrant("t", tuple((p.split(":")[0], p.split(":")[1]) for p in pairs))


@pytest.mark.parametrize(
    ("pairs", "init", "allowed"),
    [
        (("zh:en",), _init("zh", "en"), True),
        (("zh:en",), _init("zh", "fr"), False),
        (("zh:en",), _init("auto", "en"), False),  # auto is any source: only * allows it
        (("*:en",), _init("auto", "en"), True),
        (("zh:*",), _init("zh", "de"), True),
        # Two-way auto mode: both directions of lang_a:lang_b.
        (("zh:en", "en:zh"), _init("auto", "en", lang_a="zh", lang_b="en"), True),
        (("zh:en",), _init("auto", "en", lang_a="zh", lang_b="en"), False),
    ],
)
def test_requested_pairs(pairs: tuple[str, ...], init: wire.SessionInit, allowed: bool) -> None:
    if allowed:
        requested_pairs_allowed(_grant(*pairs), init)
    else:
        with pytest.raises(Refusal) as refused:
            requested_pairs_allowed(_grant(*pairs), init)
        assert refused.value.reason == "pair" and refused.value.close_reason is None


def test_a_token_without_pairs_allows_any() -> None:
    requested_pairs_allowed(SessionGrant("t"), _init("xx", "yy"))
    targets = {"fr": ["s-1"], "en": ["s-2"]}
    assert allowed_targets(SessionGrant("t"), _init("zh", "en"), targets) == (targets, [])


def test_room_targets_keep_only_allowed_languages() -> None:
    kept, refused = allowed_targets(
        _grant("zh:en", "zh:de"), _init("zh", "en"), {"en": ["a"], "fr": ["b"], "de": ["c"]}
    )
    assert kept == {"en": ["a"], "de": ["c"]} and refused == ["fr"]


def test_room_targets_of_a_two_way_session_need_only_the_pairs_it_translates() -> None:
    # two-way auto zh<->en: "en" is translated from zh (zh:en), never from en itself
    two_way = _init("auto", "en", lang_a="zh", lang_b="en")
    grant = _grant("zh:en", "en:zh")
    assert allowed_targets(grant, two_way, {"en": ["me", "a"]}) == ({"en": ["me", "a"]}, [])
    kept, refused = allowed_targets(grant, two_way, {"en": ["me"], "fr": ["b"]})
    assert kept == {"en": ["me"]} and refused == ["fr"]


def test_a_speaker_grouped_under_a_refused_language_keeps_its_own_translation() -> None:
    # Rooms.target_languages put the speaker under the members' language when nobody asked
    # for its own; that language refused, the speaker still gets what its session asked for
    kept, refused = allowed_targets(
        _grant("zh:en"), _init("zh", "en"), {"fr": ["me", "b"]}, speaker="me"
    )
    assert kept == {"en": ["me"]} and refused == ["fr"]


CAPS = NodeCapabilities(asr=["zh", "en", "fr"], semantic=["zh", "en", "fr"], tts=["en", "fr"])


def test_node_token_id_and_languages() -> None:
    grant = NodeGrant("token", node_id="node-A", languages=frozenset({"zh", "en"}))
    node_id, caps = node_registration(grant, None, "node-MINTED", CAPS)
    assert node_id == "node-A"
    assert (caps.asr, caps.semantic, caps.tts) == (["zh", "en"], ["zh", "en"], ["en"])
    assert node_registration(grant, "node-A", "node-MINTED", CAPS)[0] == "node-A"
    with pytest.raises(Refusal) as refused:
        node_registration(grant, "node-B", "node-MINTED", CAPS)
    assert refused.value.reason == "node_id"
    with pytest.raises(Refusal) as refused:
        node_registration(NodeGrant("token", languages=frozenset({"de"})), None, "n", CAPS)
    assert refused.value.reason == "languages"


def test_a_secret_or_no_authentication_leaves_the_registration_as_it_was() -> None:
    for grant in (NodeGrant("open"), NodeGrant("secret")):
        assert node_registration(grant, None, "node-MINTED", CAPS) == ("node-MINTED", CAPS)
        assert node_registration(grant, "node-X", "node-MINTED", CAPS) == ("node-X", CAPS)


def test_a_node_naming_no_language_registers_as_before_whatever_its_grant() -> None:
    """Fuzzing found it: with authentication off, a node_register with empty
    language_capabilities was refused (it registers, serving no pair, on main)."""
    empty = NodeCapabilities(asr=[], semantic=[])
    for grant in (NodeGrant("open"), NodeGrant("token", languages=frozenset({"zh"}))):
        assert node_registration(grant, None, "node-M", empty) == ("node-M", empty)
