"""Properties: decoding never raises anything but ProtocolError; what decodes round-trips."""

from __future__ import annotations

from typing import Any

import msgspec
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler import protocol as wire
from tests.protocol.examples import EXAMPLES

DECODERS = (wire.decode_client_message, wire.decode_node_message)
TAGS = sorted(
    {
        cls.__struct_config__.tag  # type: ignore[attr-defined]
        for union in (wire.ClientMessage, wire.ServerMessage, wire.NodeMessage, wire.NodeCommand)
        for cls in union.__args__  # type: ignore[attr-defined]
    }
)
FIELD_NAMES = sorted(
    {key for _, _, text in EXAMPLES for key in orjson.loads(text) if key != "type"}
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
# Objects that look like messages: a real type and a mix of real field names, random values.
message_like = st.builds(
    lambda tag, body: {"type": tag, **body},
    st.sampled_from(TAGS),
    st.dictionaries(st.sampled_from(FIELD_NAMES), json_values, max_size=12),
)
# Real examples with one field replaced by a random value.
mutated_examples = st.builds(
    lambda example, key, value: {**orjson.loads(example[2]), key: value},
    st.sampled_from(EXAMPLES),
    st.sampled_from(FIELD_NAMES),
    json_values,
)


def _decode_all(frame: str | bytes) -> list[Any]:
    decoded = []
    for decode in DECODERS:
        try:
            decoded.append((decode, decode(frame)))
        except wire.ProtocolError:
            pass
    return decoded


def _roundtrips(decoded: list[Any]) -> None:
    for decode, message in decoded:
        assert isinstance(message, msgspec.Struct)
        assert decode(wire.encode(message)) == message


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(json_values | message_like | mutated_examples)
def test_any_json_decodes_or_raises_protocol_error(value: Any) -> None:
    _roundtrips(_decode_all(orjson.dumps(value)))


@settings(max_examples=300)
@given(st.binary(max_size=200) | st.text(max_size=200))
def test_any_bytes_or_text_decode_or_raise_protocol_error(frame: str | bytes) -> None:
    _roundtrips(_decode_all(frame))
