"""Hypothesis strategies for WebSocket frames against ``/ws/session`` and ``/ws/node``.

Valid frames are built from the message types of ``scheduler.protocol`` (walked with
``msgspec.inspect``) and from frames the real clients sent (``corpus/``, copied from the recorded
sessions of the reference clients). On top of them: mutated frames (a field dropped, a value of the
wrong type, an unknown field or ``type``), truncated and corrupted text, binary frames, non-object
JSON, deep nesting, and frames past ``server.max_frame_bytes``.

Ids are drawn as placeholders (``@own_session``, ``@honest_node``, ...) that the harness replaces
with live ids when it sends the frame, so frames can name this socket's own session or node, or
those of the honest peers running beside the fuzzer.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgspec
from hypothesis import strategies as st

from scheduler import protocol as wire

__all__ = [
    "FUZZ_LANGS",
    "ID_PLACEHOLDERS",
    "Frame",
    "frame_sequences",
    "seed_frames",
    "valid_message",
]

Socket = Literal["session", "node"]
CORPUS = Path(__file__).parent / "corpus"

# Languages fuzzed frames use; the honest traffic's pair is outside this set, so no fuzzed node
# ever becomes a candidate for its jobs.
FUZZ_LANGS = ["zh", "en", "ja", "de", "auto", ""]

# Placeholders the harness resolves per socket (see ``resolve``).
ID_PLACEHOLDERS = [
    "@own_session",
    "@own_node",
    "@honest_session",
    "@honest_node",
    "@honest_job",
    "@unknown",
]

_ID_FIELDS = {
    "session_id",
    "node_id",
    "job_id",
    "to",
    "target_session_id",
    "room_code",
    "trace_id",
    "group_id",
}
_LANG_FIELDS = {"src_lang", "tgt_lang", "lang_a", "lang_b", "preferred_lang", "dialect"}
_LANG_LIST_FIELDS = {"auto_langs", "asr_languages", "semantic_languages", "tts_languages"}
_AUDIO_FIELDS = {"payload", "audio", "tts_audio"}
_PLACEHOLDER = re.compile(r"^<(\d+) base64 chars>$")


@dataclass(frozen=True)
class Frame:
    """One WebSocket message: JSON text (placeholders resolved before sending) or raw bytes."""

    data: str | bytes
    note: str  # what kind of frame this is, for the failure report

    @property
    def binary(self) -> bool:
        return isinstance(self.data, bytes)


# -- values -------------------------------------------------------------------------------------

_json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
)
any_json = st.recursive(
    _json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)

ids = st.one_of(st.sampled_from(ID_PLACEHOLDERS), st.text(max_size=20))
audio_b64 = st.one_of(
    st.binary(max_size=600).map(lambda b: base64.b64encode(b).decode()),
    st.just(""),
    st.text(max_size=40),  # mostly not base64
)


def _string_for(name: str) -> st.SearchStrategy[Any]:
    if name in _ID_FIELDS:
        return ids
    if name in _LANG_FIELDS:
        return st.one_of(st.sampled_from(FUZZ_LANGS), st.text(max_size=8))
    if name in _AUDIO_FIELDS:
        return audio_b64
    return st.text(max_size=20)


def _value(info: msgspec.inspect.Type, name: str) -> st.SearchStrategy[Any]:
    """A JSON value the type ``info`` accepts (field ``name`` picks ids, languages, audio)."""
    i = msgspec.inspect
    if isinstance(info, i.StructType):
        return _struct(info)
    if isinstance(info, i.UnionType):
        return st.one_of([_value(t, name) for t in info.types])
    if isinstance(info, i.StrType):
        return _string_for(name)
    if isinstance(info, i.BoolType):
        return st.booleans()
    if isinstance(info, i.IntType):
        low = info.ge if info.ge is not None else -(2**31)
        return st.integers(min_value=low, max_value=2**31)
    if isinstance(info, i.FloatType):
        return st.floats(min_value=0, max_value=1e6, allow_nan=False)
    if isinstance(info, i.NoneType):
        return st.none()
    if isinstance(info, i.LiteralType):
        return st.sampled_from(list(info.values))
    if isinstance(info, i.ListType):
        item = (
            st.sampled_from(FUZZ_LANGS) if name in _LANG_LIST_FIELDS else _value(info.item_type, "")
        )
        return st.lists(item, max_size=3)
    if isinstance(info, i.DictType):
        return st.dictionaries(st.text(max_size=8), _value(info.value_type, ""), max_size=3)
    if isinstance(info, i.AnyType):
        return any_json
    raise TypeError(f"no strategy for {info!r}")


def _struct(info: msgspec.inspect.StructType) -> st.SearchStrategy[dict[str, Any]]:
    required = {f.encode_name: _value(f.type, f.name) for f in info.fields if f.required}
    optional = {f.encode_name: _value(f.type, f.name) for f in info.fields if not f.required}
    base = st.fixed_dictionaries(required, optional=optional)
    tag = info.cls.__struct_config__.tag
    if tag is None:
        return base
    field = info.cls.__struct_config__.tag_field or "type"
    return base.map(lambda d: {field: tag, **d})


_INBOUND: dict[Socket, tuple[type[msgspec.Struct], ...]] = {
    "session": tuple(wire.ClientMessage.__args__),  # type: ignore[attr-defined]
    "node": tuple(wire.NodeMessage.__args__),  # type: ignore[attr-defined]
}
_OUTBOUND: dict[Socket, tuple[type[msgspec.Struct], ...]] = {
    "session": tuple(wire.ServerMessage.__args__),  # type: ignore[attr-defined]
    "node": tuple(wire.NodeCommand.__args__),  # type: ignore[attr-defined]
}


def valid_message(socket: Socket, *, echoes: bool = True) -> st.SearchStrategy[dict[str, Any]]:
    """A message of a type the socket accepts; ``echoes`` adds the other direction's types
    (server-to-client frames sent back, which the gateways parse and ignore)."""
    types = _INBOUND[socket] + (_OUTBOUND[socket] if echoes else ())
    return st.one_of([_struct(msgspec.inspect.type_info(t)) for t in types])  # type: ignore[arg-type]


# -- recorded frames ----------------------------------------------------------------------------


def _fill(value: Any, name: str = "") -> Any:
    """Recorded frames elide audio (``"<1712 base64 chars>"``) and carry ids of their own
    session: audio becomes that much base64, ids become this socket's own."""
    if isinstance(value, dict):
        return {k: _fill(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, name) for v in value]
    if isinstance(value, str):
        match = _PLACEHOLDER.match(value)
        if match:
            return base64.b64encode(bytes(int(match.group(1)) * 3 // 4)).decode()
        if name == "session_id":
            return "@own_session"
        if name == "node_id":
            return "@own_node"
    return value


def seed_frames(socket: Socket) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = json.loads((CORPUS / f"{socket}_frames.json").read_text())
    return [_fill(frame) for frame in frames]


# -- mutations ----------------------------------------------------------------------------------


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    """A message with one to three of: a field dropped, replaced by any JSON value, an unknown
    field added, the ``type`` changed, an id field swapped for another socket's."""
    message = dict(draw(base))
    for _ in range(draw(st.integers(1, 3))):
        how = draw(st.sampled_from(["drop", "retype", "add", "type", "swap_id"]))
        keys = sorted(message)
        if how == "drop" and keys:
            message.pop(draw(st.sampled_from(keys)))
        elif how == "retype" and keys:
            message[draw(st.sampled_from(keys))] = draw(any_json)
        elif how == "add":
            message[draw(st.text(min_size=1, max_size=12))] = draw(any_json)
        elif how == "type":
            message["type"] = draw(
                st.one_of(st.text(max_size=20), st.sampled_from(_ALL_TAGS), any_json)
            )
        else:
            id_keys = [k for k in keys if k in _ID_FIELDS]
            if id_keys:
                message[draw(st.sampled_from(id_keys))] = draw(st.sampled_from(ID_PLACEHOLDERS))
    return message


_ALL_TAGS = sorted(
    {
        t.__struct_config__.tag  # type: ignore[misc]
        for union in (wire.ClientMessage, wire.ServerMessage, wire.NodeMessage, wire.NodeCommand)
        for t in union.__args__  # type: ignore[attr-defined]
    }
)


def _text(message: Any) -> str:
    return json.dumps(message, ensure_ascii=False)


@st.composite
def corrupted_text(draw: st.DrawFn, base: st.SearchStrategy[dict[str, Any]]) -> Frame:
    text = _text(draw(base))
    how = draw(st.sampled_from(["truncate", "splice", "not_an_object", "nested", "empty"]))
    if how == "truncate":
        return Frame(text[: draw(st.integers(0, max(0, len(text) - 1)))], "truncated JSON")
    if how == "splice":
        at = draw(st.integers(0, len(text)))
        junk = draw(st.text(min_size=1, max_size=8))
        return Frame(text[:at] + junk + text[at:], "JSON with junk spliced in")
    if how == "not_an_object":
        return Frame(_text(draw(_json_scalars | st.lists(_json_scalars))), "JSON, not an object")
    if how == "nested":
        depth = draw(st.integers(100, 5000))
        return Frame("[" * depth + "]" * depth, "deeply nested arrays")
    return Frame("", "empty text frame")


@st.composite
def binary_frame(draw: st.DrawFn, base: st.SearchStrategy[dict[str, Any]]) -> Frame:
    if draw(st.booleans()):
        return Frame(_text(draw(base)).encode(), "a valid message as a binary frame")
    return Frame(draw(st.binary(max_size=200)), "random bytes")


@st.composite
def huge_frame(draw: st.DrawFn, base: st.SearchStrategy[dict[str, Any]], limit: int) -> Frame:
    """A message padded to just under or past ``limit`` bytes (server.max_frame_bytes)."""
    message = dict(draw(base))
    over = draw(st.sampled_from([True, False]))
    size = limit + draw(st.integers(1, 4096)) if over else draw(st.integers(limit // 2, limit - 64))
    key = draw(st.sampled_from(sorted(message) or ["type"]))
    message[key] = ""
    pad = size - len(_text(message).encode())
    message[key] = "A" * max(0, pad)
    return Frame(_text(message), "past max_frame_bytes" if over else "just under max_frame_bytes")


def frames(socket: Socket, limit: int) -> st.SearchStrategy[Frame]:
    """Any one frame for ``socket``."""
    seeds = seed_frames(socket)
    # An index, not sampled_from(seeds): hypothesis would print every seed in its reprs.
    valid = st.one_of(valid_message(socket), st.integers(0, len(seeds) - 1).map(seeds.__getitem__))
    kinds: list[st.SearchStrategy[Frame]] = [
        valid.map(lambda m: Frame(_text(m), f"valid {m.get('type')}")),
        mutated(valid).map(lambda m: Frame(_text(m), "mutated")),
        corrupted_text(valid),
        binary_frame(valid),
        huge_frame(valid, limit),
        st.text(max_size=100).map(lambda t: Frame(t, "random text")),
    ]
    # Each kind about as often as the others (one_of leans towards its first strategies).
    return st.sampled_from(range(len(kinds))).flatmap(kinds.__getitem__)


def frame_sequences(socket: Socket, limit: int) -> st.SearchStrategy[list[Frame]]:
    """One to six frames, after this socket's own valid ``session_init`` / ``node_register``
    half of the time (so handlers past the handshake are reached too)."""
    opening = _OPENING[socket]
    return st.tuples(st.booleans(), st.lists(frames(socket, limit), min_size=1, max_size=6)).map(
        lambda t: ([Frame(_text(opening), "opening")] if t[0] else []) + t[1]
    )


_OPENING: dict[Socket, dict[str, Any]] = {
    "session": {
        "type": "session_init", "client_version": "web-client-v1.0", "platform": "web",
        "src_lang": "zh", "tgt_lang": "en", "dialect": None, "features": {},
        "pairing_code": None, "mode": "one_way", "trace_id": "fuzz", "tenant_id": None,
    },
    "node": {
        "type": "node_register", "node_id": "@own_node", "version": "2.0.0",
        "capability_schema_version": "2.0", "platform": "linux",
        "hardware": {"cpu_cores": 2, "memory_gb": 8}, "installed_models": [],
        "capability_by_type": [{"type": "asr", "ready": True}], "features_supported": {},
        "accept_public_jobs": True,
        "language_capabilities": {"asr_languages": ["zh"], "semantic_languages": ["en"]},
    },
}  # fmt: skip


def resolve(text: str, ids: dict[str, str]) -> str:
    """Replace the id placeholders in a JSON text frame by live ids (``ids``: placeholder -> id)."""
    for placeholder, value in ids.items():
        text = text.replace(f'"{placeholder}"', json.dumps(value))
    return text
