"""Audio that says which cut it belongs to: every chunk carries a marker the node reads back.

A chunk is Plan-A framed fake Opus (``[u16 LE length][packet]``, one 60-byte packet per 20 ms, as
the browser sends at 24 kbps). Its first packet starts with the chunk's marker ``~c<client>.<n>~``
(``n`` counts the client's chunks from 0 across all its sessions); the other packets are filler
that can never form a marker. The scheduler concatenates chunks into an utterance's audio, so the
node finds, in the job's audio, exactly the chunks that utterance holds, in order, and echoes them
in its result text. The accounting then knows which chunks each result or job carried: merges and
splits of cuts are followed exactly, chunk by chunk.
"""

from __future__ import annotations

import re
import struct

__all__ = ["PACKETS_PER_CHUNK", "PACKET_BYTES", "chunk_audio", "chunk_marker", "markers_in"]

PACKET_BYTES = 60
PACKETS_PER_CHUNK = 13  # 260 ms of audio: the browser sends one chunk about every 256 ms
_MARK = re.compile(r"~(c\d+\.\d+)~")
_FILLER = bytes([0x5A]) * PACKET_BYTES  # no "~" in it: filler never forms a marker


def chunk_marker(client: int, n: int) -> str:
    """The marker of chunk ``n`` of client ``client`` (as echoed: ``c3.17``)."""
    return f"c{client}.{n}"


def chunk_audio(marker: str, packets: int = PACKETS_PER_CHUNK) -> bytes:
    """One Plan-A chunk whose first packet carries ``marker``."""
    head = f"~{marker}~".encode().ljust(PACKET_BYTES, b"\x5a")
    frames = [head] + [_FILLER] * (packets - 1)
    return b"".join(struct.pack("<H", len(p)) + p for p in frames)


def markers_in(audio: bytes) -> list[str]:
    """The markers of the chunks in ``audio`` (an utterance: chunks concatenated), in order."""
    found: list[str] = []
    offset = 0
    while offset + 2 <= len(audio):
        (length,) = struct.unpack_from("<H", audio, offset)
        packet = audio[offset + 2 : offset + 2 + length]
        offset += 2 + length
        match = _MARK.match(packet.decode("latin-1"))
        if match:
            found.append(match.group(1))
    return found
