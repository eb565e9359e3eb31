"""Simulated Electron node and browser client for end-to-end tests.

They speak raw JSON exactly as the real clients do (original-protocol.md §6.1, §6.2): the same
fields, ``null`` where the browser sends ``null``, no field the real clients never send. They do not
import our protocol types on purpose: a test passes only if the daemon understands what the real
clients put on the wire.
"""

from __future__ import annotations

import base64
import struct
import time
import uuid
from collections.abc import Callable
from typing import Any

import anyio
import orjson
from websockets.asyncio.client import ClientConnection, connect

__all__ = ["SimBrowser", "SimNode", "opus_plan_a"]

Message = dict[str, Any]


def opus_plan_a(packets: int, packet_bytes: int = 58) -> bytes:
    """Plan-A framed fake Opus: ``[u16 LE length][packet]`` per 20 ms packet."""
    body = bytes(range(packet_bytes % 256)) * (packet_bytes // max(1, packet_bytes % 256) + 1)
    packet = body[:packet_bytes]
    return b"".join(struct.pack("<H", len(packet)) + packet for _ in range(packets))


def is_job(m: Message) -> bool:
    """A ``job_assign`` frame (what a node's wait_for looks for)."""
    return m.get("type") == "job_assign"


class _Peer:
    # Set (then replaced) whenever any peer receives a frame: lets a test wait on several peers.
    any_arrived = anyio.Event()

    def __init__(self, url: str) -> None:
        self.url = url
        self.ws: ClientConnection | None = None
        self.received: list[Message] = []
        self._arrived = anyio.Event()
        self.closed_code: int | None = None
        self.closed = anyio.Event()

    async def connect(self) -> None:
        self.ws = await connect(self.url, compression=None, max_size=None, open_timeout=5)

    async def send(self, message: Message) -> None:
        assert self.ws is not None
        await self.ws.send(orjson.dumps(message).decode())

    async def send_raw(self, text: str) -> None:
        assert self.ws is not None
        await self.ws.send(text)

    async def pump(self) -> None:
        """Read frames into ``received`` until the socket closes."""
        assert self.ws is not None
        try:
            async for frame in self.ws:
                at = time.perf_counter()
                message = orjson.loads(frame)
                if await self.on_frame(message, at):
                    self.received.append(message)
                self._arrived.set()
                self._arrived = anyio.Event()
                _Peer._notify_any()
        except Exception:
            pass
        finally:
            self.closed_code = self.ws.close_code
            self.closed.set()
            self._arrived.set()
            _Peer._notify_any()

    async def on_frame(self, message: Message, at: float) -> bool:
        """Called for each frame as it arrives (``at``: perf_counter); False: not kept in
        ``received``. Benchmarks override it to timestamp and answer in the receive loop."""
        return True

    @staticmethod
    def _notify_any() -> None:
        _Peer.any_arrived.set()
        _Peer.any_arrived = anyio.Event()

    async def wait_for(
        self, predicate: Callable[[Message], bool], within: float = 10.0, start: int = 0
    ) -> Message:
        """The first received message (from index ``start``) matching ``predicate``."""
        with anyio.fail_after(within):
            seen = start
            while True:
                for message in self.received[seen:]:
                    if predicate(message):
                        return message
                seen = len(self.received)
                if self.ws is not None and self.closed_code is not None:
                    raise AssertionError(
                        f"socket closed ({self.closed_code}) while waiting; got {self.received}"
                    )
                await self._arrived.wait()

    async def wait_type(self, kind: str, within: float = 10.0, **fields: Any) -> Message:
        return await self.wait_for(
            lambda m: m.get("type") == kind and all(m.get(k) == v for k, v in fields.items()),
            within,
        )

    def of_type(self, kind: str) -> list[Message]:
        return [m for m in self.received if m.get("type") == kind]

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()


class SimNode(_Peer):
    """The Electron node agent: register, heartbeat, answer job_assign (node-agent-*.ts)."""

    def __init__(
        self,
        url: str,
        langs: tuple[list[str], list[str]] = (["zh", "en"], ["zh", "en"]),
        node_id: str | None = None,
    ) -> None:
        super().__init__(url)
        self.asr, self.semantic = langs
        self.node_id = node_id

    def register_message(self) -> Message:
        return {
            "type": "node_register",
            "node_id": self.node_id,
            "version": "2.0.0",
            "capability_schema_version": "2.0",
            "platform": "windows",
            "hardware": {
                "cpu_cores": 16,
                "memory_gb": 32,
                "gpus": [{"name": "RTX 4090", "memory_gb": 24}],
            },
            "installed_models": [],
            "installed_services": [
                {
                    "service_id": "faster-whisper-vad",
                    "type": "asr",
                    "device": "gpu",
                    "status": "running",
                }
            ],
            "capability_by_type": [{"type": "asr", "ready": True}],
            "features_supported": {},
            "accept_public_jobs": True,
            "language_capabilities": {
                "asr_languages": self.asr,
                "semantic_languages": self.semantic,
                "tts_languages": self.semantic,
                "semantic_core_ready": True,
            },
        }

    def heartbeat_message(self, running_jobs: int = 0) -> Message:
        return {
            "type": "node_heartbeat",
            "node_id": self.node_id,
            "timestamp": int(time.time() * 1000),
            "resource_usage": {
                "cpu_percent": 12.5, "gpu_percent": 40.0, "mem_percent": 55.1,
                "running_jobs": running_jobs, "gpu_queue_length": 0,
            },
            "installed_services": [
                {"service_id": "faster-whisper-vad", "type": "asr", "device": "gpu", "status": "running"}
            ],
            "capability_by_type": [{"type": "asr", "ready": True}],
            "language_capabilities": {
                "asr_languages": self.asr, "semantic_languages": self.semantic, "tts_languages": self.semantic,
            },
            "processing_metrics": {"serviceEfficiencies": {"faster-whisper-vad": 8.2}},
        }  # fmt: skip

    async def register(self, running_jobs: int = 0) -> Message:
        """Register, then the first heartbeat (``running_jobs``: jobs it still works on, as the
        real node reports after a reconnect)."""
        await self.send(self.register_message())
        ack = await self.wait_type("node_register_ack")
        self.node_id = ack["node_id"]
        await self.send(self.heartbeat_message(running_jobs))
        return ack

    def result_for(
        self, job: Message, text_asr: str = "你好", text_translated: str = "Hello"
    ) -> Message:
        return {
            "type": "job_result",
            "job_id": job["job_id"],
            "attempt_id": job["attempt_id"],
            "node_id": self.node_id,
            "session_id": job["session_id"],
            "utterance_index": job["utterance_index"],
            "success": True,
            "text_asr": text_asr,
            "text_translated": text_translated,
            "tts_audio": base64.b64encode(b"tts").decode(),
            "tts_format": "opus",
            "extra": {"language_probability": 0.98},
            "processing_time_ms": 1840,
            "trace_id": job["trace_id"],
        }

    def partial_for(self, job: Message, text: str = "你") -> Message:
        return {
            "type": "asr_partial", "job_id": job["job_id"], "node_id": self.node_id,
            "session_id": job["session_id"], "utterance_index": job["utterance_index"],
            "text": text, "is_final": False, "trace_id": job["trace_id"],
        }  # fmt: skip


class SimBrowser(_Peer):
    """The web client: session_init, ~200 ms Plan-A Opus chunks, is_final (web-client/src)."""

    def __init__(self, url: str, src: str = "zh", tgt: str = "en") -> None:
        super().__init__(url)
        self.src, self.tgt = src, tgt
        self.session_id: str | None = None
        self.seq = 0

    async def init(self, **extra: Any) -> Message:
        message: Message = {
            "type": "session_init",
            "client_version": "web-client-v1.0",
            "platform": "web",
            "src_lang": self.src,
            "tgt_lang": self.tgt,
            "dialect": None,
            "features": {},
            "pairing_code": None,
            "mode": "one_way",
            "trace_id": str(uuid.uuid4()),
            "tenant_id": None,
        }
        message.update(extra)
        await self.send(message)
        ack = await self.wait_type("session_init_ack")
        self.session_id = ack["session_id"]
        return ack

    async def chunk(self, audio: bytes, is_final: bool = False) -> None:
        self.seq += 1
        await self.send(
            {
                "type": "audio_chunk",
                "session_id": self.session_id,
                "seq": self.seq,
                "is_final": is_final,
                "payload": base64.b64encode(audio).decode(),
            }
        )

    async def final(self) -> None:
        self.seq += 1
        await self.send(
            {
                "type": "audio_chunk",
                "session_id": self.session_id,
                "seq": self.seq,
                "is_final": True,
                "payload": "",
            }
        )

    async def speak(self, packets: int = 10) -> None:
        """One ~200 ms chunk per 10 packets, then the manual cut."""
        for start in range(0, packets, 10):
            await self.chunk(opus_plan_a(min(10, packets - start)))
        await self.final()


async def wait_any(
    peers: list[SimNode], predicate: Callable[[Message], bool], within: float = 10.0
) -> tuple[int, Message]:
    """The first message matching ``predicate`` on any of ``peers``, with that peer's index."""
    with anyio.fail_after(within):
        while True:
            arrived = _Peer.any_arrived
            for i, peer in enumerate(peers):
                for message in peer.received:
                    if predicate(message):
                        return i, message
            await arrived.wait()
