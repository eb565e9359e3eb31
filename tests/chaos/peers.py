"""Simulated nodes and browser sessions that behave like the real ones under faults.

Behaviour from ``/work/shared/reference/real-clients.md``:

* :class:`ChaosNode` (the Electron node): registers with ``node_id: null`` once, then always with
  its assigned id; heartbeats every 15 s with ``running_jobs``; never sends ``job_ack``,
  ``job_started`` or ``max_concurrent_jobs``; takes ``job_time_s`` per job; a result ready while
  its socket is down is discarded, one ready after a new connection is up goes on that connection;
  a result whose text equals the last one it sent for the session is suppressed; after a socket
  drop it reconnects after ``reconnect_s`` (5 s) through the load balancer, with the same id.
* :class:`ChaosClient` (the browser): ``session_init``, one ~256 ms ``audio_chunk`` at a time,
  manual cuts sent as ``is_final`` with an empty payload followed 3 ms later by the last buffered
  chunk (which belongs to the cut); after a close it reconnects after 1, 2, 4 s and starts a new
  session (it never resumes one).

The load balancer is client-side and deterministic (:class:`RoundRobin`): each (re)connect takes
the next replica in turn; a replica that refuses the connection or does not complete the
WebSocket handshake within ``open_timeout_s`` is skipped for the next, as an LB retries a failed
backend. Everything the peers see goes to one :class:`Recorder`, which the accounting reads.
"""

from __future__ import annotations

import base64
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.chaos.accounting import CutSent, ErrorSeen, JobSeen, ResultSeen, SocketClosed
from tests.chaos.markers import chunk_audio, chunk_marker, markers_in
from tests.e2e.clients import SimNode

__all__ = ["ChaosClient", "ChaosNode", "Recorder", "RoundRobin"]

Message = dict[str, Any]
HEARTBEAT_S = 15.0
CHUNK_S = 0.256
CUT_TAIL_S = 0.003  # the browser's last buffered chunk follows its is_final by ~3 ms
CLIENT_BACKOFF_S = (1.0, 2.0, 4.0)


@dataclass
class Recorder:
    """Everything the simulated peers observed, for the accounting and the report."""

    cuts: list[CutSent] = field(default_factory=list)
    results: list[ResultSeen] = field(default_factory=list)
    errors: list[ErrorSeen] = field(default_factory=list)
    jobs: list[JobSeen] = field(default_factory=list)
    closes: list[SocketClosed] = field(default_factory=list)
    node_closes: Counter[str] = field(default_factory=Counter)  # close code -> count
    session_closes: Counter[str] = field(default_factory=Counter)
    error_frames: Counter[str] = field(default_factory=Counter)  # error.code -> count
    error_examples: dict[str, str] = field(default_factory=dict)  # error.code -> a message
    discarded_results: int = 0  # ready while the node's socket was down (the real node drops it)
    suppressed_results: int = 0  # same text as the last result for the session
    cancels: int = 0
    # (at, job id, node id, what): assign <attempt>, result_sent, discarded, suppressed, cancel
    job_events: list[tuple[float, str, str, str]] = field(default_factory=list)
    closing: bool = False  # the run's teardown: closes from here on are ours
    last_activity: float = field(default_factory=time.monotonic)

    def touch(self) -> None:
        self.last_activity = time.monotonic()

    def job_event(self, job_id: str, node_id: str | None, what: str) -> None:
        self.job_events.append((time.monotonic(), job_id, node_id or "", what))


class RoundRobin:
    """A client-side load balancer: each connect takes the next replica that accepts."""

    def __init__(self, urls: list[str], open_timeout_s: float = 3.0) -> None:
        self.urls = urls
        self.open_timeout_s = open_timeout_s
        self._next = 0

    async def connect(self, path: str) -> ClientConnection | None:
        """A connection to the first replica, from the next in turn, that accepts; None if none."""
        for _ in range(len(self.urls)):
            url = self.urls[self._next % len(self.urls)] + path
            self._next += 1
            try:
                return await connect(
                    url,
                    compression=None,
                    max_size=None,
                    open_timeout=self.open_timeout_s,
                    ping_interval=None,
                )
            except Exception:  # refused, reset, handshake timeout or refusal: next replica
                continue
        return None


def _text(chunks: list[str]) -> str:
    return " ".join(chunks)


class ChaosNode:
    def __init__(
        self,
        lb: RoundRobin,
        recorder: Recorder,
        *,
        job_time_s: float = 1.2,
        reconnect_s: float = 5.0,
        langs: tuple[list[str], list[str]] = (["zh", "en"], ["zh", "en"]),
        rng: random.Random | None = None,
    ) -> None:
        self.lb = lb
        self.recorder = recorder
        self.job_time_s = job_time_s
        self.reconnect_s = reconnect_s
        self.rng = rng or random.Random()
        self.wire = SimNode("", langs)  # the real node's frames
        self.ws: ClientConnection | None = None  # the registered connection, if any
        self.running: dict[str, Message] = {}  # job id -> its job_assign
        self.cancelled: set[str] = set()
        self.last_text: dict[str, str] = {}  # session -> text of the last result sent
        self.registered = anyio.Event()
        self.connections = 0

    @property
    def node_id(self) -> str | None:
        return self.wire.node_id

    async def run(self, tg: anyio.abc.TaskGroup) -> None:
        """Connect, serve, reconnect after a drop, forever (until cancelled)."""
        while True:
            ws = await self.lb.connect("/ws/node")
            if ws is None:
                await anyio.sleep(self.reconnect_s)
                continue
            code = await self._serve(ws, tg)
            self.recorder.node_closes[str(code)] += 1
            await anyio.sleep(self.reconnect_s)

    async def _serve(self, ws: ClientConnection, tg: anyio.abc.TaskGroup) -> int | None:
        try:
            await ws.send(orjson.dumps(self.wire.register_message()).decode())
            with anyio.move_on_after(30):
                async for frame in ws:
                    message = orjson.loads(frame)
                    if message.get("type") == "node_register_ack":
                        self.wire.node_id = message["node_id"]
                        break
            if self.ws is None and ws.close_code is None and self.wire.node_id:
                self.ws = ws
                self.connections += 1
                self.registered.set()
                async with anyio.create_task_group() as beats:
                    beats.start_soon(self._heartbeats, ws)
                    async for frame in ws:
                        self._on_frame(orjson.loads(frame), tg)
                    beats.cancel_scope.cancel()
        except* (ConnectionClosed, OSError):
            pass
        finally:
            if self.ws is ws:
                self.ws = None
            with anyio.CancelScope(shield=True):
                await ws.close()
        return ws.close_code

    async def _heartbeats(self, ws: ClientConnection) -> None:
        while True:
            beat = self.wire.heartbeat_message(running_jobs=len(self.running))
            await ws.send(orjson.dumps(beat).decode())
            await anyio.sleep(HEARTBEAT_S)

    def _on_frame(self, message: Message, tg: anyio.abc.TaskGroup) -> None:
        kind = message.get("type")
        if kind == "job_assign":
            self.recorder.touch()
            chunks = markers_in(base64.b64decode(message["audio"]))
            self.recorder.jobs.append(
                JobSeen(
                    message["session_id"],
                    int(message["utterance_index"]),
                    chunks,
                    job_id=message["job_id"],
                    attempt=int(message["attempt_id"]),
                    node_id=self.node_id or "",
                    at=time.monotonic(),
                )
            )
            self.recorder.job_event(
                message["job_id"], self.node_id, f"assign {message['attempt_id']}"
            )
            self.running[message["job_id"]] = message
            self.cancelled.discard(message["job_id"])
            tg.start_soon(self._work, message, chunks)
        elif kind == "job_cancel":
            self.recorder.cancels += 1
            self.recorder.job_event(message["job_id"], self.node_id, "cancel")
            self.cancelled.add(message["job_id"])

    async def _work(self, job: Message, chunks: list[str]) -> None:
        await anyio.sleep(self.job_time_s * self.rng.uniform(0.8, 1.2))
        if self.running.get(job["job_id"]) is job:
            del self.running[job["job_id"]]
        if job["job_id"] in self.cancelled:
            return
        ws = self.ws
        if ws is None:
            self.recorder.discarded_results += 1
            self.recorder.job_event(job["job_id"], self.node_id, "discarded (socket down)")
            return
        text = _text(chunks)
        if self.last_text.get(job["session_id"]) == text:
            self.recorder.suppressed_results += 1
            self.recorder.job_event(job["job_id"], self.node_id, "suppressed (same text)")
            return
        self.last_text[job["session_id"]] = text
        result = self.wire.result_for(job, text_asr=text, text_translated=text)
        try:
            await ws.send(orjson.dumps(result).decode())
            self.recorder.job_event(job["job_id"], self.node_id, "result sent")
        except ConnectionClosed:
            self.recorder.discarded_results += 1
            self.recorder.job_event(job["job_id"], self.node_id, "discarded (send failed)")

    def flap(self) -> None:
        """Drop the socket as a network failure would (no close frame)."""
        ws = self.ws
        if ws is not None:
            ws.transport.abort()


class ChaosClient:
    """One user speaking: cuts of ``chunks`` chunks, a pause, the next cut; a new session after
    every close."""

    def __init__(
        self,
        number: int,
        lb: RoundRobin,
        recorder: Recorder,
        *,
        chunks: tuple[int, int] = (3, 6),
        gap_s: tuple[float, float] = (0.4, 1.0),
        rng: random.Random | None = None,
    ) -> None:
        self.number = number
        self.lb = lb
        self.recorder = recorder
        self.chunks = chunks
        self.gap_s = gap_s
        self.rng = rng or random.Random(number)
        self.speaking = True
        self.session_id: str | None = None
        self.started = anyio.Event()
        self._chunk_no = 0
        self._cut_no = 0
        self._backoff = 0

    async def run(self) -> None:
        while True:
            ws = await self.lb.connect("/ws/session")
            if ws is not None:
                await self._session(ws)
            delay = CLIENT_BACKOFF_S[min(self._backoff, len(CLIENT_BACKOFF_S) - 1)]
            self._backoff += 1
            await anyio.sleep(delay)

    async def _session(self, ws: ClientConnection) -> None:
        session_id: str | None = None
        try:
            await ws.send(orjson.dumps(self._init()).decode())
            with anyio.move_on_after(30):
                async for frame in ws:
                    message = orjson.loads(frame)
                    if message.get("type") == "session_init_ack":
                        session_id = message["session_id"]
                        break
            if session_id is None:
                return
            self.session_id = session_id
            self._backoff = 0
            self.started.set()
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._speak, ws, session_id)
                async for frame in ws:
                    self._on_frame(orjson.loads(frame), session_id)
                tg.cancel_scope.cancel()
        except* (ConnectionClosed, OSError):
            pass
        finally:
            with anyio.CancelScope(shield=True):
                await ws.close()
            if session_id is not None and not self.recorder.closing:
                self.recorder.closes.append(
                    SocketClosed(session_id, ws.close_code, time.monotonic())
                )
                self.recorder.session_closes[str(ws.close_code)] += 1

    def _init(self) -> Message:
        return {
            "type": "session_init", "client_version": "web-client-v1.0", "platform": "web",
            "src_lang": "zh", "tgt_lang": "en", "dialect": None, "features": {},
            "pairing_code": None, "mode": "one_way", "trace_id": str(uuid.uuid4()),
            "tenant_id": None,
        }  # fmt: skip

    async def _speak(self, ws: ClientConnection, session_id: str) -> None:
        seq = 0

        async def send(payload: bytes, is_final: bool) -> None:
            nonlocal seq
            seq += 1
            frame = {
                "type": "audio_chunk", "session_id": session_id, "seq": seq,
                "is_final": is_final, "payload": base64.b64encode(payload).decode(),
            }  # fmt: skip
            await ws.send(orjson.dumps(frame).decode())

        while self.speaking:
            cut = CutSent(self.number, self._cut_no, session_id, [], 0.0, interrupted=True)
            self._cut_no += 1
            self.recorder.cuts.append(cut)
            n = self.rng.randint(*self.chunks)
            try:
                for _ in range(n - 1):
                    marker = self._next_marker()
                    await send(chunk_audio(marker), False)
                    cut.chunks.append(marker)
                    await anyio.sleep(CHUNK_S)
                # The browser: is_final first, then (3 ms later) the last chunk it had buffered.
                await send(b"", True)
                cut.finished_at = time.monotonic()
                cut.interrupted = False
                await anyio.sleep(CUT_TAIL_S)
                marker = self._next_marker()
                await send(chunk_audio(marker), False)
                cut.chunks.append(marker)
            except ConnectionClosed:
                return
            self.recorder.touch()
            await anyio.sleep(self.rng.uniform(*self.gap_s))

    def _next_marker(self) -> str:
        marker = chunk_marker(self.number, self._chunk_no)
        self._chunk_no += 1
        return marker

    def _on_frame(self, message: Message, session_id: str) -> None:
        kind = message.get("type")
        now = time.monotonic()
        if kind == "translation_result":
            self.recorder.touch()
            chunks = str(message.get("text_translated") or "").split()
            self.recorder.results.append(
                ResultSeen(
                    session_id, int(message["utterance_index"]), message["job_id"], chunks, now
                )
            )
        elif kind == "ui_event" and message.get("event") == "ERROR":
            index = message.get("utterance_index")
            self.recorder.touch()
            self.recorder.errors.append(
                ErrorSeen(
                    session_id,
                    -1 if index is None else int(index),
                    str(message.get("job_id")),
                    str(message.get("error_code")),
                    now,
                )
            )
        elif kind == "error":
            self.recorder.touch()
            code = str(message.get("code"))
            self.recorder.error_frames[code] += 1
            self.recorder.error_examples.setdefault(code, str(message.get("message")))
