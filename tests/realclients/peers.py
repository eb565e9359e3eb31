"""Test peers that behave like the real clients, built from their recorded frames (frames/).

``RealNode`` is the Electron node agent: it registers with the recorded ``node_register`` (no
``max_concurrent_jobs``, ``node_id: null`` the first time, its own id afterwards), heartbeats with
the recorded ``node_heartbeat`` right after registering and then every ``heartbeat_s``, never sends
``job_ack`` or ``job_started``, takes ``job_seconds`` per job (jobs run side by side, as the stub
inference service of the recordings answered them), sends ``asr_partial`` then the recorded
``job_result`` shape, refuses a second job for an utterance it already had, suppresses a result
whose text equals the last one it sent for the session, and after a socket drop registers again
with the same id and sends a job's result on whichever connection is up when the job is done.

``RealBrowser`` is the web client: the recorded ``session_init`` (two-way mode), then the
recorded ``audio_chunk`` timeline replayed at the recorded times, with synthetic Plan-A Opus of
the recorded payload lengths. Rooms as the real UI sends them: ``room_create`` with ``client_ts``
only, ``room_join`` with the code and a display name.

The peers do not import our protocol types: what they send is what the real clients send.
"""

from __future__ import annotations

import base64
import copy
import re
import struct
import time
import uuid
from collections.abc import Awaitable, Callable
from functools import cache
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

__all__ = [
    "MANY_LANGUAGES",
    "Message",
    "RealBrowser",
    "RealNode",
    "eventually",
    "many_language_register",
    "plan_a_payload",
    "recorded",
]

Message = dict[str, Any]
FRAMES = Path(__file__).resolve().parent / "frames"

# What the real node reports when no narrow service runs: one list for asr, semantic and tts, the
# intersection of its running services' languages. Whisper's 99 languages that M2M100's 100 also
# has (Whisper's own order); the TTS is assumed to cover them.
MANY_LANGUAGES = (
    "en zh de es ru ko fr ja pt tr pl ca nl ar sv it id hi fi vi he uk el ms cs ro da hu ta no "
    "th ur hr bg lt ml cy sk fa lv bn sr az sl kn et mk br is hy ne mn bs kk sq sw gl mr pa si "
    "km yo so af oc ka be sd gu am yi lo uz ht ps lb my tl mg ln ha ba su"
).split()

_PLACEHOLDER = re.compile(r"^<(\d+) base64 chars>$")
# Bytes per Plan-A packet (2-byte length + Opus data) that make a recorded ~256 ms chunk about
# 13 packets of 20 ms, as the browser's 24 kbps encoder produces.
_PACKET_BYTES = 98


@cache
def _load(name: str) -> Any:
    return orjson.loads((FRAMES / name).read_bytes())


def recorded(name: str) -> Any:
    """A fresh copy of a recorded file (a frame or a timeline)."""
    return copy.deepcopy(_load(name))


def plan_a_payload(placeholder: str) -> str:
    """Base64 of synthetic Plan-A Opus (``[u16 LE length][packet]``...) exactly as long as the
    recorded payload (``"<1712 base64 chars>"``); ``""`` stays empty."""
    if placeholder == "":
        return ""
    match = _PLACEHOLDER.match(placeholder)
    if match is None:
        raise ValueError(f"not a recorded payload placeholder: {placeholder!r}")
    size = int(match.group(1)) * 3 // 4
    packets = max(1, round(size / _PACKET_BYTES))
    data = size - 2 * packets
    body = bytearray()
    for i in range(packets):
        length = data // packets + (1 if i < data % packets else 0)
        body += struct.pack("<H", length) + bytes((i + j) % 251 for j in range(length))
    return base64.b64encode(bytes(body)).decode()


def many_language_register() -> Message:
    """The recorded ``node_register`` of a node whose narrow zh/en semantic service is stopped:
    its language list becomes what its other running services share (``MANY_LANGUAGES``)."""
    frame: Message = recorded("node_register.json")
    for service in frame["installed_services"]:
        if service["service_id"] == "semantic-repair-en-zh":
            service["status"] = "stopped"
    caps = frame["language_capabilities"]
    for key in ("asr_languages", "tts_languages", "semantic_languages"):
        caps[key] = list(MANY_LANGUAGES)
    return frame


async def eventually(check: Callable[[], Awaitable[bool] | bool], within: float) -> bool:
    """Whether ``check()`` becomes true within ``within`` seconds (polled every 20 ms).

    Unlike ``tests.waiting.until`` it does not fail: the test asserts on the outcome with a
    message saying what the scheduler did instead.
    """
    deadline = time.monotonic() + within
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result or time.monotonic() >= deadline:
            return result
        await anyio.sleep(0.02)


def _now_ms() -> int:
    return int(time.time() * 1000)


class _Peer:
    """Frames received over one or more connections of one client, in arrival order."""

    def __init__(self, url: str, tg: anyio.abc.TaskGroup) -> None:
        self.url = url
        self.tg = tg
        self.ws: ClientConnection | None = None
        self.received: list[Message] = []
        self.close_code: int | None = None
        self.close_reason = ""
        self._arrived = anyio.Event()

    async def connect(self, url: str | None = None) -> None:
        self.url = url or self.url
        self.close_code, self.close_reason = None, ""
        self.ws = await connect(self.url, compression=None, max_size=None, open_timeout=5)
        self.tg.start_soon(self._pump, self.ws)

    @property
    def connected(self) -> bool:
        return self.ws is not None and self.close_code is None

    async def send(self, message: Message) -> None:
        assert self.ws is not None, "not connected"
        await self.ws.send(orjson.dumps(message).decode())

    async def _pump(self, ws: ClientConnection) -> None:
        try:
            async for frame in ws:
                message = orjson.loads(frame)
                self.received.append(message)
                await self.on_message(message)
                self._notify()
        except ConnectionClosed:
            pass
        finally:
            if ws is self.ws:
                self.close_code = ws.close_code if ws.close_code is not None else 1006
                self.close_reason = ws.close_reason or ""
            self._notify()

    async def on_message(self, message: Message) -> None:
        """Called for each frame as it arrives, after it is recorded."""

    def _notify(self) -> None:
        self._arrived.set()
        self._arrived = anyio.Event()

    async def wait_for(
        self,
        predicate: Callable[[Message], bool],
        within: float,
        what: str = "a frame",
        start: int = 0,
    ) -> Message:
        """The first received message (from index ``start``) matching ``predicate``;
        AssertionError (saying what was received instead) when none comes within ``within``
        seconds or the socket closes."""
        seen = start
        with anyio.move_on_after(within):
            while True:
                for message in self.received[seen:]:
                    if predicate(message):
                        return message
                seen = len(self.received)
                if self.ws is not None and self.close_code is not None:
                    raise AssertionError(
                        f"socket closed ({self.close_code} {self.close_reason!r}) while waiting "
                        f"for {what}; received {_summary(self.received)}"
                    )
                await self._arrived.wait()
        raise AssertionError(f"no {what} within {within} s; received {_summary(self.received)}")

    def of_type(self, kind: str, **fields: Any) -> list[Message]:
        return [
            m
            for m in self.received
            if m.get("type") == kind and all(m.get(k) == v for k, v in fields.items())
        ]

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()


def _summary(messages: list[Message]) -> list[str]:
    """Short descriptions for failure messages (no audio)."""
    out = []
    for m in messages:
        kind = m.get("type")
        if kind == "error":
            out.append(f"error {m.get('code')} {m.get('message')!r}")
        elif kind == "ui_event":
            out.append(f"ui_event {m.get('event')} #{m.get('utterance_index')}")
        elif kind in ("translation_result", "job_assign"):
            out.append(f"{kind} #{m.get('utterance_index')}")
        else:
            out.append(str(kind))
    return out


class RealNode(_Peer):
    """The Electron node agent, as recorded (see the module docstring)."""

    def __init__(
        self,
        url: str,
        tg: anyio.abc.TaskGroup,
        *,
        register: Message | None = None,
        job_seconds: float = 1.5,
        heartbeat_s: float = 15.0,
        translate: Callable[[Message], str] | None = None,
    ) -> None:
        super().__init__(url, tg)
        self.register_frame: Message = register or recorded("node_register.json")
        self.node_id: str | None = self.register_frame.get("node_id")
        self.job_seconds = job_seconds
        self.heartbeat_s = heartbeat_s
        self.translate = translate or (lambda job: f"hello utterance {job['utterance_index']}")
        self.jobs: list[Message] = []
        self.running = 0
        self.sent_results: list[Message] = []
        self._utterances_seen: set[tuple[str, int]] = set()
        self._last_text: dict[str, str] = {}
        self._beating = False

    # -- connection ----------------------------------------------------------------------------

    async def register(self, url: str | None = None) -> Message:
        """Connect, send ``node_register`` (``node_id`` null the first time), wait for the ack,
        then heartbeat at once and every ``heartbeat_s``, as the agent does."""
        await self.connect(url)
        frame = copy.deepcopy(self.register_frame)
        frame["node_id"] = self.node_id
        mark = len(self.received)
        await self.send(frame)
        ack = await self.wait_for(
            lambda m: m.get("type") == "node_register_ack",
            within=5,
            what="node_register_ack",
            start=mark,
        )
        self.node_id = ack["node_id"]
        await self.heartbeat()
        if not self._beating:
            self._beating = True
            self.tg.start_soon(self._heartbeat_forever)
        return ack

    async def drop(self) -> None:
        """The network goes away under the socket: no close frame (the scheduler sees 1006)."""
        assert self.ws is not None
        self.ws.transport.abort()
        with anyio.fail_after(5):
            while self.close_code is None:
                await self._arrived.wait()

    def heartbeat_frame(self) -> Message:
        frame: Message = recorded("node_heartbeat.json")
        frame["node_id"] = self.node_id
        frame["timestamp"] = _now_ms()
        frame["resource_usage"]["running_jobs"] = self.running
        frame["installed_services"] = copy.deepcopy(self.register_frame["installed_services"])
        frame["language_capabilities"] = copy.deepcopy(self.register_frame["language_capabilities"])
        return frame

    async def heartbeat(self) -> None:
        await self.send(self.heartbeat_frame())

    async def _heartbeat_forever(self) -> None:
        while True:
            await anyio.sleep(self.heartbeat_s)
            if self.connected:
                await self.heartbeat()

    # -- jobs ----------------------------------------------------------------------------------

    async def on_message(self, message: Message) -> None:
        if message.get("type") == "job_assign":
            self.jobs.append(message)
            self.tg.start_soon(self._process, message)

    async def _process(self, job: Message) -> None:
        utterance = (job["session_id"], job["utterance_index"])
        if utterance in self._utterances_seen:
            # The agent keeps every (session, utterance_index) it processed and refuses repeats.
            await self._send_if_connected(self._failure(job, "DUPLICATE_UTTERANCE_INDEX"))
            return
        self._utterances_seen.add(utterance)
        self.running += 1
        try:
            await anyio.sleep(max(0.0, self.job_seconds - 0.2))
            if job.get("enable_streaming_asr"):
                await self._send_if_connected(self._partial(job))
            await anyio.sleep(min(0.2, self.job_seconds))
        finally:
            self.running -= 1
        result = self.result_for(job)
        if self._last_text.get(job["session_id"]) == result["text_translated"]:
            return  # "skipping duplicate job result": this job never gets a result
        if await self._send_if_connected(result):
            self._last_text[job["session_id"]] = result["text_translated"]
            self.sent_results.append(result)

    async def _send_if_connected(self, message: Message) -> bool:
        """Send on the current connection; a result ready while the socket is down is lost."""
        if not self.connected:
            return False
        try:
            await self.send(message)
        except ConnectionClosed:
            return False
        return True

    def result_for(self, job: Message) -> Message:
        result = next(
            e["frame"]
            for e in recorded("node_reconnect_then_result.json")
            if e["frame"] and e["frame"].get("type") == "job_result"
        )
        result.update(
            job_id=job["job_id"],
            attempt_id=job["attempt_id"],
            node_id=self.node_id,
            session_id=job["session_id"],
            utterance_index=job["utterance_index"],
            trace_id=job["trace_id"],
            text_asr=f"你好 utterance {job['utterance_index']}",
            text_translated=self.translate(job),
            tts_audio=plan_a_payload(result["tts_audio"]),
            processing_time_ms=int(self.job_seconds * 1000),
        )
        return dict(result)

    def _partial(self, job: Message) -> Message:
        return {
            "type": "asr_partial",
            "node_id": self.node_id,
            "session_id": job["session_id"],
            "utterance_index": job["utterance_index"],
            "job_id": job["job_id"],
            "text": f"部分 {job['utterance_index']}",
            "is_final": False,
            "trace_id": job["trace_id"],
        }

    def _failure(self, job: Message, reason: str) -> Message:
        return {
            "type": "job_result",
            "job_id": job["job_id"],
            "attempt_id": job["attempt_id"],
            "node_id": self.node_id,
            "session_id": job["session_id"],
            "utterance_index": job["utterance_index"],
            "success": False,
            "processing_time_ms": 12,
            "error": {"code": "PROCESSING_ERROR", "message": f"{reason}: already processed"},
            "trace_id": job["trace_id"],
        }


class RealBrowser(_Peer):
    """The web client, replaying a recorded timeline (see the module docstring)."""

    def __init__(
        self, url: str, tg: anyio.abc.TaskGroup, timeline: str = "browser_manual_cuts.json"
    ) -> None:
        super().__init__(url, tg)
        self.timeline: list[Message] = recorded(timeline)
        self.session_id: str | None = None
        self.trace_id = ""

    async def init(self) -> Message:
        """Connect and send the recorded ``session_init`` (a fresh ``trace_id``, as the client
        makes one per session); returns the ack."""
        await self.connect()
        init = next(e["frame"] for e in self.timeline if _type(e) == "session_init")
        init["trace_id"] = self.trace_id = str(uuid.uuid4())
        await self.send(init)
        ack = await self.wait_for(
            lambda m: m.get("type") == "session_init_ack", within=5, what="session_init_ack"
        )
        self.session_id = ack["session_id"]
        return ack

    def chunks(self, start_ms: int = 0, end_ms: int | None = None) -> list[tuple[int, Message]]:
        """The recorded ``audio_chunk`` frames sent in ``[start_ms, end_ms]``, with their times."""
        return [
            (e["ms"], e["frame"])
            for e in self.timeline
            if e["dir"] == "out"
            and _type(e) == "audio_chunk"
            and e["ms"] >= start_ms
            and (end_ms is None or e["ms"] <= end_ms)
        ]

    def utterances_cut(self, start_ms: int = 0, end_ms: int | None = None) -> int:
        """How many ``is_final`` of the range end a non-empty utterance (audio since the last)."""
        count, pending = 0, False
        for _, frame in self.chunks(start_ms, end_ms):
            if frame["payload"]:
                pending = True
            if frame["is_final"] and pending:
                count, pending = count + 1, False
        return count

    async def replay(self, start_ms: int = 0, end_ms: int | None = None) -> None:
        """Send the recorded audio of ``[start_ms, end_ms]`` at the recorded spacing.

        Only ``audio_chunk`` frames: the recorded ``tts_started`` / ``tts_play_ended`` answer the
        playback of results this run may not have produced at the same moments.
        """
        chunks = self.chunks(start_ms, end_ms)
        if not chunks:
            return
        origin, began = chunks[0][0], time.monotonic()
        for at, frame in chunks:
            delay = (at - origin) / 1000 - (time.monotonic() - began)
            if delay > 0:
                await anyio.sleep(delay)
            await self.send(
                {
                    **frame,
                    "session_id": self.session_id,
                    "payload": plan_a_payload(frame["payload"]),
                }
            )

    async def room_create(self) -> str:
        """The UI's "create room": ``client_ts`` only; returns the room code."""
        await self.send({"type": "room_create", "client_ts": _now_ms()})
        ack = await self.wait_for(
            lambda m: m.get("type") == "room_create_ack", within=5, what="room_create_ack"
        )
        code: str = ack["room_code"]
        return code

    async def room_join(self, code: str, display_name: str, **extra: Any) -> None:
        """The UI's "join room" (``extra``: fields the UI itself never sends, e.g. preferred_lang)."""
        await self.send(
            {"type": "room_join", "room_code": code, "display_name": display_name, **extra}
        )


def _type(entry: Message) -> str | None:
    frame = entry.get("frame")
    return frame.get("type") if isinstance(frame, dict) else None
