"""Fuzzing real replicas: one socket per example, honest traffic beside it, checks after each.

Each example opens a fresh socket to a replica, optionally opens it properly (``session_init`` /
``node_register``, waiting for the ack), sends the generated frames, then proves what state the
socket is in:

- ``/ws/session``: a probe frame of an unknown ``type`` carrying a nonce must come back as an
  ``error`` naming the nonce (the socket still reads and answers), and every frame our own copy of
  the protocol cannot parse must have had its ``INVALID_MESSAGE`` error before it; or the socket
  was closed with 1009 after a frame past ``server.max_frame_bytes``. Nothing else closes a session
  socket.
- ``/ws/node``: nodes get no error frames (original-protocol.md §6.3), so the probe is a valid
  ``node_register`` under the socket's own id: its ack must arrive (every registration the socket
  sent was acknowledged), or the socket was closed with 1008 after a registration (refused, or a
  second node id on one socket) or 1009 after an oversized frame.

Then the replica must still run and answer ``/readyz`` 200, and its log must hold no ERROR record.
Two honest pairs (a browser and a node, each pair across both replicas) run utterances the whole
time on languages fuzzed frames never use; when the fuzzing ends, every utterance they sent must
have its ``translation_result``, and the honest browsers must have received no error.

Fuzzed frames never register a node under an honest node's id: without node authentication
(issue 14 item 1) that replaces the honest node's connection by design.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import orjson
from websockets.exceptions import ConnectionClosed

from scheduler import protocol as wire
from tests.e2e.clients import SimBrowser, SimNode, _Peer
from tests.e2e.daemons import Replica
from tests.fuzz.frames import Frame, Socket, resolve

__all__ = ["FuzzTarget", "HonestPair", "LogWatch", "Outcome", "honest_traffic"]

Message = dict[str, Any]
WAIT_S = 10.0
# The real browser's chunk interval (docs/protocol.md, "What the real clients do").
CHUNK_S = 0.256
OPENING_ACK = {"session": "session_init_ack", "node": "node_register_ack"}


@dataclass
class LogWatch:
    """Reads a replica's JSON log from where it last stopped; returns new ERROR records."""

    path: str
    offset: int = 0

    def new_errors(self) -> list[str]:
        with Path(self.path).open("rb") as log:
            log.seek(self.offset)
            chunk = log.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self.offset += len(complete)
        errors = []
        # Split on \n only: a record may carry U+0085 or U+2028 from a fuzzed id, which
        # str.splitlines() would take for line ends.
        for raw in complete.split(b"\n")[:-1]:
            line = raw.decode(errors="replace")
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                errors.append(line)  # not ours: a raw traceback on stderr
                continue
            if record.get("level") in ("ERROR", "CRITICAL"):
                errors.append(line)
        return errors


@dataclass
class HonestPair:
    """A browser on one replica, a node on the other, utterances back to back until stopped."""

    browser: SimBrowser
    node: SimNode
    sent: int = 0
    completed: int = 0
    failures: list[str] = field(default_factory=list)

    async def run(self, stop: anyio.Event) -> None:
        while not stop.is_set():
            try:
                await self.one_utterance()
            except Exception as exc:  # recorded: the test reports every one
                self.failures.append(f"utterance {self.sent}: {exc!r}")
                return
            if self.sent % 10 == 0:
                await self.node.send(self.node.heartbeat_message())
            # Paced as the real browser sends (one ~256 ms chunk at a time): flat out, the
            # honest pair itself would pass limits.session_messages_per_second once the burst
            # is spent (the long profile did), and the fuzzer and the replicas share two cores.
            await anyio.sleep(CHUNK_S)

    async def one_utterance(self) -> None:
        session = self.browser.session_id
        start_node, start_browser = len(self.node.received), len(self.browser.received)
        await self.browser.speak(5)
        self.sent += 1
        job = await self.node.wait_for(
            lambda m: m.get("type") == "job_assign" and m.get("session_id") == session,
            WAIT_S,
            start_node,
        )
        await self.node.send(self.node.result_for(job))
        await self.browser.wait_for(
            lambda m: m.get("type") == "translation_result" and m.get("job_id") == job["job_id"],
            WAIT_S,
            start_browser,
        )
        self.completed += 1

    def unexpected(self) -> list[Message]:
        """Frames the honest browser should never see: errors, or frames of another session."""
        own = self.browser.session_id
        return [
            m
            for m in self.browser.received
            if m.get("type") == "error" or ("session_id" in m and m["session_id"] != own)
        ]


@asynccontextmanager
async def honest_traffic(replicas: list[Replica]) -> AsyncIterator[list[HonestPair]]:
    """Two honest pairs running utterances until the block ends; then they finish their current
    utterance and the block's caller checks them."""
    langs = [("fzhonest-a", "fzhonest-b"), ("fzhonest-c", "fzhonest-d")]
    pairs: list[HonestPair] = []
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        peers: list[_Peer] = []
        try:
            for i, (src, tgt) in enumerate(langs):
                node = SimNode(replicas[(i + 1) % 2].ws + "/ws/node", ([src], [tgt]))
                browser = SimBrowser(replicas[i % 2].ws + "/ws/session", src, tgt)
                for peer in (node, browser):
                    await peer.connect()
                    tg.start_soon(peer.pump)
                    peers.append(peer)
                await node.register()
                await browser.init()
                pairs.append(HonestPair(browser, node))
            done = anyio.Event()

            async def run_all() -> None:
                async with anyio.create_task_group() as runners:
                    for pair in pairs:
                        runners.start_soon(pair.run, stop)
                done.set()

            tg.start_soon(run_all)
            yield pairs
            stop.set()
            with anyio.fail_after(2 * WAIT_S):
                await done.wait()
        finally:
            for peer in peers:
                await peer.close()
            tg.cancel_scope.cancel()


class FuzzPeer(_Peer):
    async def send_frame(self, data: str | bytes) -> None:
        assert self.ws is not None
        await self.ws.send(data)


@dataclass
class Outcome:
    """What one example did to its socket, for the assertions and their messages."""

    socket: Socket
    frames: list[str]
    received: list[Message]
    closed_code: int | None
    too_big: bool
    registers: int

    def describe(self) -> str:
        return (
            f"{self.socket} socket: sent {self.frames}; closed with {self.closed_code}; "
            f"received {[m.get('type') for m in self.received]}"
        )


@dataclass
class FuzzTarget:
    """One replica under fuzz, the honest ids it may name, and its log."""

    replica: Replica
    limit: int  # server.max_frame_bytes of the replica
    honest: list[HonestPair]
    log: LogWatch

    examples: int = 0

    def ids(self, own_session: str, own_node: str) -> dict[str, str]:
        self.examples += 1
        pair = self.honest[self.examples % len(self.honest)]
        jobs = [m["job_id"] for m in pair.node.received if m.get("type") == "job_assign"]
        return {
            "@own_session": own_session,
            "@own_node": own_node,
            "@honest_session": pair.browser.session_id or "",
            "@honest_node": pair.node.node_id or "",
            "@honest_job": jobs[-1] if jobs else "job-none",
            "@unknown": f"unknown-{secrets.token_hex(4)}",
        }

    async def example(self, socket: Socket, frames: list[Frame]) -> Outcome:
        peer = FuzzPeer(f"{self.replica.ws}/ws/{socket}")
        await peer.connect()
        async with anyio.create_task_group() as tg:
            tg.start_soon(peer.pump)
            try:
                return await self._drive(peer, socket, frames)
            finally:
                await peer.close()
                tg.cancel_scope.cancel()

    async def _drive(self, peer: FuzzPeer, socket: Socket, frames: list[Frame]) -> Outcome:
        own_node = f"fz-{secrets.token_hex(6)}"
        honest_nodes = {p.node.node_id for p in self.honest}
        own_session = "@own_session"
        sent: list[str] = []
        too_big = False
        undecodable = registers = 0
        for frame in frames:
            data = frame.data
            if isinstance(data, str):
                data = resolve(data, self.ids(own_session, own_node))
            message: Any = None
            try:
                if socket == "session":
                    message = wire.decode_client_message(data)
                else:
                    message = wire.decode_node_message(data)
            except wire.ProtocolError:
                undecodable += 1
            if isinstance(message, wire.NodeRegister):
                if message.node_id in honest_nodes:  # see the module docstring
                    data = (
                        resolve(frame.data, {"@honest_node": own_node})
                        if isinstance(frame.data, str)
                        else data
                    )
                registers += 1
            size = len(data.encode() if isinstance(data, str) else data)
            too_big = too_big or size > self.limit
            sent.append(f"{frame.note} ({size} B)")
            start = len(peer.received)
            try:
                await peer.send_frame(data)
            except ConnectionClosed:
                break
            if frame.note == "opening":
                ack = await self._ack(peer, f"{OPENING_ACK[socket]}", start)
                if ack is not None and socket == "session":
                    own_session = ack["session_id"]
        if not peer.closed.is_set():
            await self._probe(peer, socket, own_node, registers, undecodable)
        return Outcome(
            socket=socket,
            frames=sent,
            received=list(peer.received),
            closed_code=peer.closed_code if peer.closed.is_set() else None,
            too_big=too_big,
            registers=registers,
        )

    @staticmethod
    async def _ack(peer: FuzzPeer, kind: str, start: int) -> Message | None:
        """The ack of the opening frame, or None if the socket closed first."""
        with anyio.fail_after(WAIT_S):
            while True:
                for message in peer.received[start:]:
                    if message.get("type") == kind:
                        return message
                if peer.closed.is_set():
                    return None
                await peer._arrived.wait()

    async def _probe(
        self, peer: FuzzPeer, socket: Socket, own_node: str, registers: int, undecodable: int
    ) -> None:
        nonce = f"probe-{secrets.token_hex(6)}"
        try:
            if socket == "session":
                await peer.send_frame(orjson.dumps({"type": nonce}).decode())
            else:
                probe = SimNode("", (["zh"], ["en"]), node_id=own_node).register_message()
                await peer.send_frame(orjson.dumps(probe).decode())
        except ConnectionClosed:
            return

        def answered() -> bool:
            if socket == "session":
                return any(
                    m.get("type") == "error" and nonce in str(m.get("message"))
                    for m in peer.received
                )
            acks = [m for m in peer.received if m.get("type") == "node_register_ack"]
            return len(acks) >= registers + 1

        with anyio.fail_after(WAIT_S):
            while not answered() and not peer.closed.is_set():
                await peer._arrived.wait()
        if socket == "session" and answered():
            errors = [
                m
                for m in peer.received
                if m.get("type") == "error"
                and m.get("code") == "INVALID_MESSAGE"
                and nonce not in str(m.get("message"))
            ]
            assert len(errors) >= undecodable, (
                f"{undecodable} unparseable frames, {len(errors)} INVALID_MESSAGE errors"
            )
