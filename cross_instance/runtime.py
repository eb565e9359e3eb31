"""The cross-instance runtime of one replica: presence, fenced ownership, routed sends, the inbox.

Lifecycle (``async with runtime``): the inbox stream and its consumer group are created, then the
presence record is written (so nothing sent to us is missed); five tasks run until leaving:

* presence: refreshes the record on its own connection every ``presence_refresh_ms`` (a blocked
  read or a busy handler can never starve it), notices remote drain requests and fencing;
* reader: ``XREADGROUP`` in batches on a dedicated blocking connection; the handler runs, and the
  entry is acked (and deleted) only when it succeeded: a failure leaves it pending;
* reclaim: every ``reclaim_interval_ms`` the replica's own stuck entries go back to the handler
  (or to the target's new owner, when it moved), following the XAUTOCLAIM cursor; beyond
  ``max_deliveries`` attempts an entry goes to the DLQ;
* takeover: inboxes of dead replicas are taken over (one live replica each, under a lease):
  every entry is re-routed to its target's current owner or dead-lettered, then the inbox goes;
* holds: messages whose target has no live owner wait up to ``route_grace_ms``.

Leaving drains (:meth:`Runtime.drain`). Delivery is at least once; handlers see a message id at
most once within ``dedup_ttl_ms``: each delivery out of an inbox first claims the id in one step
(``SET NX GET`` on its dedup key, so two copies never run at once) and turns the claim into a
done mark after a success, so a redelivery, a re-route or a DLQ replay has no second effect.
The one exception is written in docs/architecture.md (Limits): a holder that stalls past its
presence TTL mid-handler has its claim taken over.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import msgspec
from anyio.abc import TaskGroup
from prometheus_client import CollectorRegistry
from redis.asyncio import RedisCluster
from redis.exceptions import ResponseError

from cross_instance.config import RedisConfig, RuntimeConfig, validate_runtime
from cross_instance.envelope import (
    INTERNAL_KINDS,
    OWNERSHIP_LOST,
    DeadLetter,
    DeadReason,
    Envelope,
    Failure,
    Route,
    RuntimeDraining,
    RuntimeFenced,
    RuntimeReply,
    SendResult,
    TargetKind,
    new_message_id,
    now_ms,
)
from cross_instance.keys import CONSUMER_GROUP, RuntimeKeys, split_token
from cross_instance.lua import ScriptLibrary
from cross_instance.metrics import RuntimeMetrics
from cross_instance.redis_client import AnyRedis, connect, connect_blocking

__all__ = [
    "Envelope",
    "Runtime",
    "RuntimeDraining",
    "RuntimeFenced",
    "SendResult",
    "append_entry",
    "call_script",
]

log = logging.getLogger("lingua.runtime")

Handler = Callable[[Envelope], Awaitable[None]]
_ID = re.compile(r"^[\x21-\x7e]{1,256}$")  # printable ASCII, no spaces: ids travel in keys/logs
_INSTANCE_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
_LIBRARY: ScriptLibrary | None = None
_CLAIM = "claim:"  # dedup value while a delivery runs; a done mark is the handling token


def _library() -> ScriptLibrary:
    global _LIBRARY
    if _LIBRARY is None:
        _LIBRARY = ScriptLibrary("runtime")
    return _LIBRARY


async def call_script(
    client: Any,
    keys: RuntimeKeys,
    name: str,
    args: Sequence[Any],
    *,
    token: str = "",
    kind: str = "",
    message_id: str = "",
) -> tuple[RuntimeReply, dict[str, Any]]:
    """Run one ``lua/runtime`` script; its reply as (code, decoded json data)."""
    library = _library()
    script = library.scripts[name]
    script_keys = keys.for_script(script, token=token, kind=kind, message_id=message_id)
    raw = await library.call(client, name, script_keys, args)
    code = RuntimeReply(int(raw[0]))
    data = msgspec.json.decode(raw[1]) if len(raw) > 1 else {}
    return code, data


async def append_entry(
    client: Any, keys: RuntimeKeys, token: str, fields: dict[str, str], maxlen: int
) -> tuple[RuntimeReply, str]:
    """Add an entry to ``token``'s inbox within ``maxlen`` entries: ``(OK, entry id)``,
    ``(FULL, "")`` when the inbox is full, ``(UNKNOWN_INBOX, "")`` when it was retired."""
    flat = [part for pair in fields.items() for part in pair]
    code, data = await call_script(client, keys, "append_entry", [maxlen, *flat], token=token)
    return code, str(data.get("id", ""))


def default_instance_id() -> str:
    env = os.environ.get("LINGUA_INSTANCE_ID", "")
    if env:
        return env
    host = _INSTANCE_UNSAFE.sub("-", socket.gethostname())[:64] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


def _check_id(what: str, value: str) -> None:
    if not isinstance(value, str) or not _ID.match(value):
        raise ValueError(f"{what} must be 1-256 printable characters without spaces: {value!r}")


@dataclass
class _Lease:
    """How a takeover ended: retired the inbox, lost the lease (neither flag), or fenced."""

    finished: bool = False
    fenced: bool = False


@dataclass
class _Held:
    """A message waiting for its target to get a live owner."""

    envelope: Envelope
    prior: int
    failure: Failure | None
    deadline: float  # monotonic seconds
    stream: str = ""
    entry_id: str = ""
    last_owner: str = ""
    checking: bool = False  # a re-check task runs for it
    done: anyio.Event = field(default_factory=anyio.Event)
    result: SendResult | None = None


class Runtime:
    """One replica's view of the cluster; see the module docstring for what runs."""

    def __init__(
        self,
        redis_config: RedisConfig,
        runtime_config: RuntimeConfig,
        handler: Handler,
        *,
        on_ownership_lost: Callable[[str, str], Awaitable[None]] | None = None,
        on_drain_requested: Callable[[], Awaitable[None]] | None = None,
        registry: CollectorRegistry | None = None,
        address: str = "",
        version: str = "",
    ) -> None:
        validate_runtime(runtime_config)
        self.redis_config = redis_config
        self.config = runtime_config
        self.handler = handler
        self.on_ownership_lost = on_ownership_lost
        self.on_drain_requested = on_drain_requested
        self.address = runtime_config.advertise_address or address
        self.version = version
        self.instance_id = runtime_config.instance_id or default_instance_id()
        # A fresh epoch per start: the token fences everything an earlier start left behind.
        self.epoch = f"{now_ms():x}{secrets.token_hex(2)}"
        self.token = f"{self.instance_id}@{self.epoch}"
        self.keys = RuntimeKeys(redis_config.key_prefix)
        self.inbox = self.keys.inbox(self.token)
        self.metrics = RuntimeMetrics(registry)
        self.draining = False
        self.fenced = False
        self.redis: AnyRedis | None = None
        self._presence_redis: AnyRedis | None = None
        self._reader_redis: AnyRedis | None = None
        self._tg: TaskGroup | None = None
        self._owned: set[tuple[str, str]] = set()
        self._inflight: set[str] = set()
        # Dedup claims of our deliveries in progress (added before the claim is even sent):
        # a claim of ours that is not here belongs to an attempt that ended, and is stale.
        self._claims: set[str] = set()
        # Read from our inbox but never given to the handler (drain stopped mid-batch): the
        # hand-over does not count that read as an attempt.
        self._unattempted: set[str] = set()
        self._held: list[_Held] = []
        self._held_wakeup = anyio.Event()
        self._stop_reading = False
        self._reader_done = anyio.Event()
        self._reclaim_lock = anyio.Lock()
        self._drain_started = False
        self._drain_done = anyio.Event()
        self._drain_requested = False
        self._reclaim_cursor = "0-0"
        # While draining, every hold ends by this time (monotonic s), however many are queued.
        self._hold_deadline = float("inf")
        # Held messages are re-checked concurrently, but with at most a quarter of the
        # connection pool: thousands of holds must not starve sends, acks and claims.
        self._recheck_slots = anyio.Semaphore(max(1, redis_config.max_connections // 4))

    def __repr__(self) -> str:
        state = "fenced" if self.fenced else "draining" if self.draining else "running"
        return (
            f"<Runtime {self.token} {state} owned={len(self._owned)} held={len(self._held)} "
            f"inflight={len(self._inflight)}>"
        )

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Runtime:
        try:
            await self._start()
        except BaseException:
            await self._close_clients()
            raise
        log.info("runtime started", extra={"instance": self.token})
        return self

    async def _close_clients(self) -> None:
        for client in (self._reader_redis, self._presence_redis, self.redis):
            if client is not None:
                await client.aclose()

    async def _start(self) -> None:
        self.redis = connect(self.redis_config)
        self._presence_redis = connect(self.redis_config)
        self._reader_redis = connect_blocking(self.redis_config, self.config.inbox_block_ms)
        for client in (self.redis, self._presence_redis, self._reader_redis):
            if isinstance(client, RedisCluster):
                await client.initialize()
        await _library().load(self.redis)
        # The group exists before anyone can learn our token, so no entry is ever skipped.
        try:
            await self.redis.xgroup_create(self.inbox, CONSUMER_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        record = {"address": self.address, "version": self.version}
        await self._script(
            "register_presence",
            [
                self.instance_id,
                self.epoch,
                msgspec.json.encode(record).decode(),
                self.config.presence_ttl_ms,
                "",
            ],
        )
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        for loop in (
            self._presence_loop,
            self._reader_loop,
            self._reclaim_loop,
            self._takeover_loop,
            self._hold_loop,
        ):
            self._tg.start_soon(loop)

    async def __aexit__(self, *exc: object) -> None:
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(self.config.drain_grace_ms / 1000):
                try:
                    await self.drain()
                except Exception:
                    log.exception("drain failed", extra={"instance": self.token})
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(self.redis_config.command_timeout_ms / 1000):
                await self._abandon_held()
        # The task group's scope must be the innermost one when it exits: no scope around it.
        if self._tg is not None:
            self._tg.cancel_scope.cancel()
            await self._tg.__aexit__(None, None, None)
            self._tg = None
        with anyio.CancelScope(shield=True):
            await self._close_clients()

    async def _abandon_held(self) -> None:
        """Leaving with messages still held (the drain ran out of grace): a send's message goes
        to the DLQ now rather than vanish; an inbox entry's stays in its inbox for the taker."""
        abandoned, self._held = self._held, []  # no recheck runs for them from here on
        self.metrics.held.set(0)
        for held in abandoned:
            if not held.stream:
                try:
                    held.result = await self._dead_letter(
                        held.envelope,
                        "no_owner",
                        deliveries=held.prior,
                        failure=held.failure,
                        owner=held.last_owner,
                    )
                except Exception:
                    log.exception("dead-lettering a held message failed")
            held.done.set()

    def _client(self) -> AnyRedis:
        if self.redis is None or self._tg is None:
            raise RuntimeError("the runtime is not running: use `async with runtime:`")
        return self.redis

    async def _script(
        self,
        name: str,
        args: Sequence[Any],
        *,
        token: str = "",
        kind: str = "",
        message_id: str = "",
        client: AnyRedis | None = None,
    ) -> tuple[RuntimeReply, dict[str, Any]]:
        target = client if client is not None else self.redis
        return await call_script(
            target, self.keys, name, args, token=token, kind=kind, message_id=message_id
        )

    # -- presence --------------------------------------------------------------------------

    async def _refresh(self) -> bool:
        """Refresh our presence record; True when it was refused (we are fenced)."""
        code, data = await self._script(
            "refresh_presence",
            [
                self.instance_id,
                self.epoch,
                "1" if self.draining else "0",
                self.config.presence_ttl_ms,
                "",
            ],
            client=self._presence_redis,
        )
        if code is RuntimeReply.FENCED:
            return not self._drain_done.is_set()  # after our own drain, refused on purpose
        if data.get("drain_requested_ms") and not self._drain_requested and not self.draining:
            self._drain_requested = True
            log.info("drain requested remotely", extra={"instance": self.token})
            assert self._tg is not None
            self._tg.start_soon(self._run_drain_request)
        return False

    async def _run_drain_request(self) -> None:
        try:
            if self.on_drain_requested is not None:
                await self.on_drain_requested()
            else:
                await self.drain()
        except Exception:
            log.exception("drain request failed", extra={"instance": self.token})

    async def _presence_loop(self) -> None:
        # A refresh that hangs is cut short so the next one still lands within the TTL (two
        # attempts fit in it: validate() keeps the TTL at least 3 refresh intervals).
        timeout = (
            min(
                self.redis_config.command_timeout_ms,
                (self.config.presence_ttl_ms - 2 * self.config.presence_refresh_ms) / 2,
            )
            / 1000
        )
        while not self.fenced and not self._drain_done.is_set():
            await anyio.sleep(self.config.presence_refresh_ms / 1000)
            if self._drain_done.is_set():
                return
            try:
                with anyio.fail_after(timeout):
                    fenced = await self._refresh()
            except Exception as exc:
                self.metrics.presence_refresh_failures.inc()
                log.warning("presence refresh failed: %r", exc, extra={"instance": self.token})
                continue
            if fenced:  # outside the refresh timeout: telling the owners may take a while
                await self._on_fenced("presence refresh refused")

    async def _on_fenced(self, why: str) -> None:
        if self.fenced:
            return
        self.fenced = True
        self._stop_reading = True
        log.error(
            "fenced (%s): another replica took over; stopping and draining",
            why,
            extra={"instance": self.token},
        )
        lost, self._owned = self._owned, set()
        if self._tg is not None and not self._drain_requested:
            self._drain_requested = True
            self._tg.start_soon(self._run_drain_request)
        for kind, ident in lost:
            await self._tell_lost(kind, ident)

    async def _tell_lost(self, kind: str, ident: str) -> None:
        if self.on_ownership_lost is None:
            return
        try:
            await self.on_ownership_lost(kind, ident)
        except Exception:
            log.exception("on_ownership_lost failed", extra={"instance": self.token})

    # -- ownership -------------------------------------------------------------------------

    async def claim_node(self, node_id: str) -> str | None:
        """Own ``node_id`` from now on; returns the previous owner token (None when none)."""
        return await self._claim("node", node_id)

    async def claim_session(self, session_id: str) -> str | None:
        return await self._claim("session", session_id)

    async def release_node(self, node_id: str) -> bool:
        """Give ``node_id`` up if we still own it (compare-and-set on our token)."""
        return await self._release("node", [node_id]) == 1

    async def release_session(self, session_id: str) -> bool:
        return await self._release("session", [session_id]) == 1

    async def _claim(self, kind: TargetKind, ident: str) -> str | None:
        _check_id(f"{kind} id", ident)
        self._client()
        if self.fenced:
            raise RuntimeFenced(f"{self.token} is fenced: cannot claim {kind} {ident}")
        if self.draining:
            raise RuntimeDraining(f"{self.token} is draining: cannot claim {kind} {ident}")
        code, data = await self._script("claim_owner", [kind, ident, self.token, ""], kind=kind)
        if code is RuntimeReply.FENCED:
            raise RuntimeFenced(f"{self.token} is not live: cannot claim {kind} {ident}")
        if not self.draining:
            self._owned.add((kind, ident))
        if code is RuntimeReply.REPLAYED:
            return await self._unless_draining(kind, ident, self.token)
        previous: str | None = data.get("previous")
        if previous and data.get("previous_live"):
            # The newest claim wins; the old owner closes its stale socket when told.
            notice = Envelope(
                message_id=new_message_id(),
                kind=OWNERSHIP_LOST,
                target_kind=kind,
                target_id=ident,
                payload=self.token,
                created_ms=now_ms(),
                origin=self.token,
            )
            await self._forward(previous, notice, prior=0, failure=None)
        return await self._unless_draining(kind, ident, previous)

    async def _unless_draining(
        self, kind: TargetKind, ident: str, previous: str | None
    ) -> str | None:
        """A drain that started while the claim was on its way has released what we owned
        already: give this claim back too, or it would name a replica that is leaving."""
        if not self.draining:
            return previous
        await self._release(kind, [ident])
        raise RuntimeDraining(f"{self.token} is draining: cannot claim {kind} {ident}")

    async def _release(self, kind: str, idents: Sequence[str], token: str = "") -> int:
        for ident in idents:
            self._owned.discard((kind, ident))
        if not idents:
            return 0
        _, data = await self._script(
            "release_owner", [kind, token or self.token, *idents], kind=kind
        )
        return int(data.get("released", 0))

    async def _resolve(self, kind: str, ident: str) -> tuple[str, bool]:
        _, data = await self._script("resolve_owner", [ident, ""], kind=kind)
        return data.get("owner") or "", bool(data.get("live"))

    # -- sending ---------------------------------------------------------------------------

    async def send_to_node(
        self, node_id: str, kind: str, payload: str, trace_id: str = "", *, resumable: bool = True
    ) -> SendResult:
        return await self._send("node", node_id, kind, payload, trace_id, resumable)

    async def send_to_session(
        self,
        session_id: str,
        kind: str,
        payload: str,
        trace_id: str = "",
        *,
        resumable: bool = True,
    ) -> SendResult:
        """``resumable=False``: the session cannot come back under this id; when it has no live
        owner the message is dropped (``route="dropped"``) instead of held and dead-lettered."""
        return await self._send("session", session_id, kind, payload, trace_id, resumable)

    async def _send(
        self,
        target_kind: TargetKind,
        target_id: str,
        kind: str,
        payload: str,
        trace_id: str,
        resumable: bool,
    ) -> SendResult:
        _check_id(f"{target_kind} id", target_id)
        if not kind or kind in INTERNAL_KINDS:
            raise ValueError(f"message kind must be non-empty and not internal: {kind!r}")
        if not isinstance(payload, str):
            raise ValueError("payload must be a str")
        self._client()
        envelope = Envelope(
            message_id=new_message_id(),
            kind=kind,
            target_kind=target_kind,
            target_id=target_id,
            payload=payload,
            trace_id=trace_id,
            created_ms=now_ms(),
            origin=self.token,
            resumable=resumable,
        )
        if (target_kind, target_id) in self._owned:
            return await self._deliver_local(envelope, prior=0, failure=None)
        result = await self._route(envelope, prior=0, failure=None)
        return result.result if isinstance(result, _Held) and result.result else _as_send(result)

    async def _call_handler(self, envelope: Envelope, claim: str = "", timed: bool = False) -> None:
        if not claim and not timed:
            # A fresh send to a target we own: the sender itself waits on the handler, so no
            # timeout scope here (it costs ~12 us, three times the rest of the short circuit).
            await self.handler(envelope)
            return
        try:
            # A hung handler must not hold its claim, its entry (and the batch behind it)
            # forever: the claim's TTL assumes this bound.
            with anyio.fail_after(self.config.handler_timeout_ms / 1000):
                await self.handler(envelope)
        except BaseException as exc:
            if not isinstance(exc, Exception):
                # Cancelled: our claim on this id is stale from now on, and may be taken over.
                self._claims.discard(claim)
            raise

    async def _deliver_local(
        self,
        envelope: Envelope,
        *,
        prior: int,
        failure: Failure | None,
        seen: bool = False,
        timed: bool = False,
    ) -> SendResult:
        """The owner is us: call the handler in process; a failure queues it in our own inbox.

        ``seen``: the message came out of an inbox (re-route, takeover, hold of an entry), so
        an earlier copy may have been handled: check and write the dedup mark, as the inbox does.
        """
        claim = ""
        if seen:
            state, claim = await self._begin_delivery(envelope.message_id)
            if state == "done":
                self.metrics.duplicates.inc()
                return SendResult(route="local", message_id=envelope.message_id, owner=self.token)
            if state == "busy":
                # Another copy is in a handler now: queue this one; its retry finds the outcome.
                return await self._queue_here(envelope, prior=prior, failure=failure)
        try:
            await self._call_handler(envelope, claim, timed)
        except Exception as exc:
            if claim:
                await self._release_claim(envelope.message_id, claim)
            if self._ended(envelope):
                self.metrics.dropped.inc()
                return SendResult(route="dropped", message_id=envelope.message_id)
            log.debug("local delivery failed, queued for retry: %r", exc)
            now = now_ms()
            failure = Failure(
                first_ms=failure.first_ms if failure else now, last_ms=now, error=_describe(exc)
            )
            return await self._queue_here(envelope, prior=prior + 1, failure=failure)
        if claim:
            await self._mark_done(envelope.message_id, claim)
        self.metrics.delivered_local.inc()
        return SendResult(route="local", message_id=envelope.message_id, owner=self.token)

    async def _queue_here(
        self, envelope: Envelope, *, prior: int, failure: Failure | None
    ) -> SendResult:
        """Queue in our own inbox for a retry (reclaim); the DLQ when the inbox is gone."""
        queued = await self._to_inbox(self.token, envelope, prior=prior, failure=failure)
        if queued is not None:
            return queued
        # Our inbox is gone: another replica took it over, we are leaving.
        return await self._dead_letter(
            envelope, "no_owner", deliveries=prior, failure=failure, owner=self.token
        )

    # -- dedup: a message id is handled at most once ---------------------------------------------

    async def _begin_delivery(self, message_id: str) -> tuple[str, str]:
        """Claim the handling of ``message_id`` in one step (SET NX GET), so two copies
        delivered at once cannot both run: ("claimed", claim value), ("done", "") when it was
        handled already, ("busy", "") while another delivery of it runs."""
        claim = f"{_CLAIM}{self.token}:{secrets.token_hex(4)}"
        # The claim outlives the handler's own timeout by one command round trip.
        ttl = self.config.handler_timeout_ms + self.redis_config.command_timeout_ms
        self._claims.add(claim)
        try:
            previous = await self._client().set(
                self.keys.dedup(message_id), claim, nx=True, px=ttl, get=True
            )
        except BaseException:
            self._claims.discard(claim)
            raise
        if previous is None:
            return "claimed", claim
        self._claims.discard(claim)
        previous = str(previous)
        if not previous.startswith(_CLAIM):
            return "done", ""
        if await self._claim_is_stale(previous):
            # Its holder died (or was cancelled) mid-handler: take the claim over now rather
            # than wait for it to expire.
            self._claims.add(claim)  # before it is visible, as above
            try:
                _, data = await self._script(
                    "swap_claim", [previous, claim, ttl], message_id=message_id
                )
            except BaseException:
                self._claims.discard(claim)
                raise
            if data.get("swapped"):
                return "claimed", claim
            self._claims.discard(claim)
        return "busy", ""

    async def _claim_is_stale(self, claim: str) -> bool:
        holder = claim[len(_CLAIM) :].rpartition(":")[0]
        if holder == self.token:
            return claim not in self._claims  # an attempt of ours that was cancelled
        return not await self._token_live(holder)

    async def _token_live(self, token: str) -> bool:
        try:
            instance, epoch = split_token(token)
        except ValueError:
            return False
        client = self._client()
        raw = await client.hget(self.keys.rt("presence"), instance)
        until = await client.zscore(self.keys.rt("alive"), instance)
        secs, micros = await client.time()  # alive scores are the server clock, not ours
        if raw is None or until is None or until <= secs * 1000 + micros // 1000:
            return False
        return bool(msgspec.json.decode(raw).get("epoch") == epoch)

    async def _mark_done(self, message_id: str, claim: str) -> None:
        try:
            await self._client().set(
                self.keys.dedup(message_id), self.token, px=self.config.dedup_ttl_ms
            )
        finally:
            self._claims.discard(claim)

    async def _release_claim(self, message_id: str, claim: str) -> None:
        self._claims.discard(claim)
        await self._script("swap_claim", [claim, "", 0], message_id=message_id)

    async def _handled(self, message_id: str) -> bool:
        """A delivery of ``message_id`` succeeded (a claim alone does not count: its handler
        may have died with its replica)."""
        mark = await self._client().get(self.keys.dedup(message_id))
        return mark is not None and not str(mark).startswith(_CLAIM)

    def _ended(self, envelope: Envelope) -> bool:
        """A non-resumable target we no longer own has ended: retrying cannot deliver it."""
        return (
            not envelope.resumable and (envelope.target_kind, envelope.target_id) not in self._owned
        )

    async def _forward(
        self, token: str, envelope: Envelope, *, prior: int, failure: Failure | None
    ) -> tuple[RuntimeReply, str]:
        """Append to ``token``'s inbox: (OK, entry id), FULL, or UNKNOWN_INBOX (retired)."""
        fields: dict[str, str] = {"env": msgspec.json.encode(envelope).decode()}
        if prior:
            fields["prior"] = str(prior)
        if failure is not None:
            fields["failure"] = msgspec.json.encode(failure).decode()
        code, entry = await append_entry(
            self._client(), self.keys, token, fields, self.config.inbox_maxlen
        )
        if code is RuntimeReply.OK and token != self.token:
            self.metrics.forwarded.inc()
        return code, entry

    async def _to_inbox(
        self,
        token: str,
        envelope: Envelope,
        *,
        prior: int,
        failure: Failure | None,
        stream: str = "",
        entry_id: str = "",
    ) -> SendResult | None:
        """Queue for ``token``'s replica; a full inbox dead-letters (reason inbox_full). None:
        the inbox is retired (its replica is gone), the caller re-resolves the owner."""
        code, entry = await self._forward(token, envelope, prior=prior, failure=failure)
        if code is RuntimeReply.UNKNOWN_INBOX:
            return None
        if code is RuntimeReply.FULL:
            return await self._dead_letter(
                envelope,
                "inbox_full",
                deliveries=prior,
                failure=failure,
                owner=token,
                stream=stream,
                entry_id=entry_id,
            )
        route: Route = "local" if token == self.token else "remote"
        return SendResult(route=route, message_id=envelope.message_id, owner=token, entry_id=entry)

    async def _route(
        self,
        envelope: Envelope,
        *,
        prior: int,
        failure: Failure | None,
        stream: str = "",
        entry_id: str = "",
    ) -> SendResult | _Held:
        """Deliver to the target's current live owner, or hold the message for the grace."""
        owner, live = await self._resolve(envelope.target_kind, envelope.target_id)
        if live and owner == self.token and not self.draining:
            return await self._deliver_local(
                envelope, prior=prior, failure=failure, seen=bool(stream)
            )
        if live and owner != self.token:
            sent = await self._to_inbox(
                owner, envelope, prior=prior, failure=failure, stream=stream, entry_id=entry_id
            )
            if sent is not None:
                return sent
        if not envelope.resumable:
            self.metrics.dropped.inc()
            log.debug("target %s ended: message dropped", envelope.target_id)
            return SendResult(route="dropped", message_id=envelope.message_id, owner=owner)
        return await self._hold(envelope, prior, failure, owner, stream, entry_id)

    async def _hold(
        self,
        envelope: Envelope,
        prior: int,
        failure: Failure | None,
        owner: str,
        stream: str,
        entry_id: str,
    ) -> SendResult | _Held:
        deadline = min(time.monotonic() + self.config.route_grace_ms / 1000, self._hold_deadline)
        if deadline <= time.monotonic():
            # Draining past its hold budget: the grace is spent, dead-letter now.
            return await self._dead_letter(
                envelope,
                "no_owner",
                deliveries=prior,
                failure=failure,
                owner=owner,
                stream=stream,
                entry_id=entry_id,
            )
        if len(self._held) >= self.config.route_hold_max:
            return await self._dead_letter(
                envelope,
                "hold_overflow",
                deliveries=prior,
                failure=failure,
                owner=owner,
                stream=stream,
                entry_id=entry_id,
            )
        held = _Held(
            envelope=envelope,
            prior=prior,
            failure=failure,
            deadline=deadline,
            stream=stream,
            entry_id=entry_id,
            last_owner=owner,
        )
        self._held.append(held)
        self.metrics.held.set(len(self._held))
        self._held_wakeup.set()
        return held

    async def _hold_loop(self) -> None:
        assert self._tg is not None
        while True:
            if not self._held:
                await self._held_wakeup.wait()
                self._held_wakeup = anyio.Event()
                continue
            await anyio.sleep(self.config.route_recheck_ms / 1000)
            for held in list(self._held):
                # Each on its own task: a slow handler of one cannot hold the others past
                # their deadline.
                if not held.checking:
                    held.checking = True
                    self._tg.start_soon(self._recheck_logged, held)
            self.metrics.held.set(len(self._held))

    async def _recheck_logged(self, held: _Held) -> None:
        try:
            await self._recheck(held)
        except Exception:
            log.exception("re-checking a held message failed")
        finally:
            held.checking = False

    async def _recheck(self, held: _Held) -> None:
        if held not in self._held:
            return  # settled or given up (its takeover page was cancelled) since it was queued
        env = held.envelope
        result: SendResult | None = None
        async with self._recheck_slots:
            owner, live = await self._resolve(env.target_kind, env.target_id)
        held.last_owner = owner or held.last_owner
        if live and owner == self.token and not self.draining:
            # Nobody waits on a held send's handler: it is timed like an inbox entry's.
            result = await self._deliver_local(
                env, prior=held.prior, failure=held.failure, seen=bool(held.stream), timed=True
            )
        elif live and owner != self.token:
            async with self._recheck_slots:
                result = await self._to_inbox(
                    owner,
                    env,
                    prior=held.prior,
                    failure=held.failure,
                    stream=held.stream,
                    entry_id=held.entry_id,
                )
        if result is None and time.monotonic() >= min(held.deadline, self._hold_deadline):
            async with self._recheck_slots:
                result = await self._dead_letter(
                    env,
                    "no_owner",
                    deliveries=held.prior,
                    failure=held.failure,
                    owner=held.last_owner,
                    stream=held.stream,
                    entry_id=held.entry_id,
                )
        if result is not None:
            self._forget(held)
            held.result = result
            held.done.set()

    def _forget(self, held: _Held) -> None:
        if held in self._held:
            self._held.remove(held)
            self.metrics.held.set(len(self._held))

    async def _route_final(
        self,
        envelope: Envelope,
        *,
        prior: int,
        failure: Failure | None,
        stream: str,
        entry_id: str,
    ) -> SendResult:
        """Route and, when held, wait for the final outcome (delivered or dead-lettered)."""
        routed = await self._route(
            envelope, prior=prior, failure=failure, stream=stream, entry_id=entry_id
        )
        if isinstance(routed, _Held):
            try:
                await routed.done.wait()
            finally:
                if not routed.done.is_set():
                    # Cancelled (the takeover lost its lease): the entry stays in its inbox
                    # for the next holder, so this copy must not be delivered as well.
                    self._forget(routed)
            assert routed.result is not None
            return routed.result
        return routed

    async def _dead_letter(
        self,
        envelope: Envelope,
        reason: DeadReason,
        *,
        deliveries: int,
        failure: Failure | None,
        owner: str,
        stream: str = "",
        entry_id: str = "",
    ) -> SendResult:
        dead = DeadLetter(
            envelope=envelope,
            reason=reason,
            stream=stream,
            entry_id=entry_id,
            owner=owner,
            deliveries=deliveries,
            last_error=failure.error if failure else "",
            first_failure_ms=failure.first_ms if failure else 0,
            last_failure_ms=failure.last_ms if failure else 0,
            dead_lettered_ms=now_ms(),
            dead_lettered_by=self.token,
        )
        code, data = await self._script(
            "dead_letter",
            [
                envelope.message_id,
                msgspec.json.encode(dead).decode(),
                self.config.dlq_maxlen,
                self.config.inbox_batch,
            ],
        )
        if code is RuntimeReply.OK:
            self.metrics.dead_lettered.labels(reason).inc()
            log.warning(
                "dead-lettered (%s) %s for %s %s",
                reason,
                envelope.kind,
                envelope.target_kind,
                envelope.target_id,
                extra={"message_id": envelope.message_id, "trace_id": envelope.trace_id},
            )
        return SendResult(
            route="dead_letter", message_id=envelope.message_id, owner=owner, entry_id=data["id"]
        )

    # -- the inbox ---------------------------------------------------------------------------

    async def _reader_loop(self) -> None:
        assert self._reader_redis is not None
        try:
            while not self._stop_reading:
                try:
                    response: Any = await self._reader_redis.xreadgroup(
                        CONSUMER_GROUP,
                        self.token,
                        {self.inbox: ">"},
                        count=self.config.inbox_batch,
                        block=self.config.inbox_block_ms,
                    )
                except Exception as exc:
                    if isinstance(exc, ResponseError) and "NOGROUP" in str(exc):
                        # Only a takeover deletes our inbox (or Redis lost its data): fenced.
                        await self._on_fenced("inbox gone")
                        return
                    # Anything else (connection lost, LOADING, READONLY after a failover...):
                    # presence still says we read, so keep reading after a backoff.
                    self.metrics.inbox_read_failures.inc()
                    log.warning("inbox read failed: %r", exc, extra={"instance": self.token})
                    await anyio.sleep(self.redis_config.retry_backoff_cap_ms / 1000)
                    continue
                batch = [entry for _stream, entries in response or [] for entry in entries]
                # The whole batch is ours until handled: reclaim must not retry the entries
                # still waiting behind a slow handler.
                self._inflight.update(entry_id for entry_id, _ in batch)
                try:
                    for entry_id, fields in batch:
                        if self._stop_reading:
                            # Draining: the rest of the batch is handed over, not attempted.
                            self._unattempted.add(entry_id)
                            continue
                        try:
                            await self._handle_entry(
                                entry_id, fields, 1 + int(fields.get("prior", 0) or 0)
                            )
                        except RuntimeFenced:
                            return
                        except Exception:
                            # The entry stays pending: reclaim retries it.
                            log.exception("inbox entry %s failed", entry_id)
                finally:
                    self._inflight.difference_update(entry_id for entry_id, _ in batch)
        finally:
            self._reader_done.set()

    async def _handle_entry(self, entry_id: str, fields: dict[str, str], deliveries: int) -> None:
        """One delivery of one inbox entry: dedup check, handler, then mark + ack on success."""
        self._inflight.add(entry_id)
        try:
            try:
                envelope = msgspec.json.decode(fields["env"], type=Envelope)
            except (KeyError, msgspec.DecodeError, msgspec.ValidationError):
                await self._dead_letter(
                    _undecodable(entry_id, fields),
                    "undecodable",
                    deliveries=deliveries,
                    failure=None,
                    owner=self.token,
                    stream=self.inbox,
                    entry_id=entry_id,
                )
                await self._ack([entry_id])
                return
            if envelope.kind == OWNERSHIP_LOST:
                await self._ownership_lost(envelope)
                await self._ack([entry_id])
                return
            state, claim = await self._begin_delivery(envelope.message_id)
            if state == "done":
                self.metrics.duplicates.inc()
                await self._ack([entry_id])
                return
            if state == "busy":
                return  # another copy is in a handler now: stays pending, reclaim looks again
            try:
                await self._call_handler(envelope, claim)
            except Exception as exc:
                await self._release_claim(envelope.message_id, claim)
                if self._ended(envelope):
                    self.metrics.dropped.inc()
                    await self._ack([entry_id])
                    return
                await self._record_failure(entry_id, fields, exc)
                return
            await self._mark_done(envelope.message_id, claim)
            await self._ack([entry_id])
            self.metrics.delivered_remote.inc()
            if deliveries > 1:
                self.metrics.redelivered.inc()
        finally:
            self._inflight.discard(entry_id)

    async def _record_failure(self, entry_id: str, fields: dict[str, str], exc: Exception) -> None:
        client = self._client()
        failures = self.keys.inbox(self.token, "failures")
        previous = await client.hget(failures, entry_id) or fields.get("failure")
        now = now_ms()
        first = msgspec.json.decode(previous, type=Failure).first_ms if previous else now
        record = Failure(first_ms=first, last_ms=now, error=_describe(exc))
        await client.hset(failures, entry_id, msgspec.json.encode(record).decode())
        log.info("handler failed, entry stays pending: %s", record.error)

    async def _ack(self, entry_ids: Sequence[str], token: str = "") -> None:
        inbox_token = token or self.token
        code, _ = await self._script(
            "ack_entry", [CONSUMER_GROUP, self.token, *entry_ids], token=inbox_token
        )
        if code is RuntimeReply.FENCED:
            if inbox_token == self.token:
                await self._on_fenced("ack refused")
            raise RuntimeFenced(f"{self.token} may not ack in {inbox_token}'s inbox")

    async def _ownership_lost(self, notice: Envelope) -> None:
        key = (notice.target_kind, notice.target_id)
        if key not in self._owned:
            return
        owner, _ = await self._resolve(notice.target_kind, notice.target_id)
        if owner == self.token:
            return  # we claimed it again since: the notice is stale
        self._owned.discard(key)
        await self._tell_lost(notice.target_kind, notice.target_id)

    async def _reclaim_loop(self) -> None:
        while not self._stop_reading:
            await anyio.sleep(self.config.reclaim_interval_ms / 1000)
            async with self._reclaim_lock:
                if self._stop_reading:
                    return
                try:
                    await self.reclaim_once()
                    await self._update_gauges()
                except RuntimeFenced:
                    return
                except Exception:
                    log.exception("reclaim failed", extra={"instance": self.token})

    async def reclaim_once(self) -> int:
        """One pass over our stuck entries (follows the cursor across pages); returns how many
        were retried or dead-lettered."""
        handled = 0
        for _ in range(max(1, self.config.inbox_maxlen // self.config.inbox_batch)):
            code, data = await self._script(
                "reclaim_entries",
                [
                    CONSUMER_GROUP,
                    self.token,
                    self.config.reclaim_min_idle_ms,
                    self._reclaim_cursor,
                    self.config.inbox_batch,
                    self.config.max_deliveries,
                    *self._inflight,
                ],
                token=self.token,
            )
            if code is RuntimeReply.FENCED:
                await self._on_fenced("reclaim refused")
                raise RuntimeFenced(self.token)
            for item in data.get("dead") or []:
                handled += 1
                await self._dead_letter_entry(item)
            for item in data.get("retry") or []:
                if self._stop_reading:  # draining: the hand-over takes the rest, unattempted
                    self._unattempted.add(item["id"])
                    continue
                handled += 1
                self.metrics.reclaimed.inc()
                await self._retry_entry(item)
            self._reclaim_cursor = data["cursor"]
            if self._reclaim_cursor == "0-0" or self._stop_reading:
                break
        return handled

    async def _retry_entry(self, item: dict[str, Any]) -> None:
        fields: dict[str, str] = item["fields"]
        try:
            envelope = msgspec.json.decode(fields["env"], type=Envelope)
        except (KeyError, msgspec.DecodeError, msgspec.ValidationError):
            await self._handle_entry(item["id"], fields, item["deliveries"])
            return
        if envelope.kind not in INTERNAL_KINDS:
            # Route by ownership now, not as it was at send time: the target may have moved.
            owner, live = await self._resolve(envelope.target_kind, envelope.target_id)
            if live and owner != self.token:
                sent = await self._to_inbox(
                    owner,
                    envelope,
                    prior=item["deliveries"] - 1,
                    failure=_failure(item),
                    stream=self.inbox,
                    entry_id=item["id"],
                )
                if sent is not None:
                    await self._ack([item["id"]])
                    return
        await self._handle_entry(item["id"], fields, item["deliveries"])

    async def _dead_letter_entry(self, item: dict[str, Any], inbox_token: str = "") -> None:
        token = inbox_token or self.token
        fields: dict[str, str] = item["fields"]
        try:
            envelope = msgspec.json.decode(fields["env"], type=Envelope)
        except (KeyError, msgspec.DecodeError, msgspec.ValidationError):
            envelope = _undecodable(item["id"], fields)
        mark = await self._client().get(self.keys.dedup(envelope.message_id))
        if mark is not None and not inbox_token:  # a copy of it was handled, or runs now
            if not str(mark).startswith(_CLAIM):
                await self._ack([item["id"]], token)
            return
        await self._dead_letter(
            envelope,
            "max_deliveries",
            deliveries=item["deliveries"],
            failure=_failure(item),
            owner=token,
            stream=self.keys.inbox(token),
            entry_id=item["id"],
        )
        await self._ack([item["id"]], token)

    async def _update_gauges(self) -> None:
        client = self._client()
        self.metrics.inbox_length.set(await client.xlen(self.inbox))
        summary = await client.xpending(self.inbox, CONSUMER_GROUP)
        oldest = summary.get("min") if summary else None
        age = max(0, now_ms() - int(str(oldest).split("-")[0])) / 1000 if oldest else 0.0
        self.metrics.oldest_pending_age.set(age)

    # -- takeover ----------------------------------------------------------------------------

    async def _takeover_loop(self) -> None:
        while not self.draining and not self.fenced:
            await anyio.sleep(self.config.takeover_interval_ms / 1000)
            if self.draining or self.fenced:
                return
            try:
                _, data = await self._script("find_dead_inboxes", [""])
                for dead in data.get("dead") or []:
                    if dead != self.token and await self.take_over(dead):
                        self.metrics.takeovers.inc()
            except RuntimeFenced:
                continue  # the loop ends when we are fenced; a lost lease race is not that
            except Exception:
                log.exception("takeover failed", extra={"instance": self.token})

    async def take_over(self, dead: str) -> bool:
        """Re-route every entry of ``dead``'s inbox, then retire it. False: someone else has it,
        its replica is alive after all, or our lease was lost on the way (the next holder goes
        on from the entries we had not acked)."""
        code, _ = await self._script(
            "begin_takeover", [dead, self.token, self.config.takeover_lock_ttl_ms, ""]
        )
        if code is RuntimeReply.FENCED:
            raise RuntimeFenced(self.token)
        if code is not RuntimeReply.OK:
            return False
        log.info("taking over inbox of %s", dead, extra={"instance": self.token})
        lease = _Lease()
        async with anyio.create_task_group() as tg:
            # The lease is renewed beside the work, not between pages: one page may wait for
            # holds and handlers longer than the lease.
            tg.start_soon(self._keep_lease, dead, lease, tg.cancel_scope)
            try:
                lease.finished = await self._take_entries(dead)
            except RuntimeFenced:
                lease.fenced = True
            finally:
                tg.cancel_scope.cancel()
        if lease.fenced:
            raise RuntimeFenced(self.token)
        if not lease.finished:
            return False
        if dead != self.token:
            await self._release_all_of(dead)
            await self._script("end_takeover", [dead, self.token])
        log.info("inbox of %s taken over and retired", dead, extra={"instance": self.token})
        return True

    async def _keep_lease(self, dead: str, lease: _Lease, work: anyio.CancelScope) -> None:
        ttl_s = self.config.takeover_lock_ttl_ms / 1000
        renewed = time.monotonic()
        while True:
            await anyio.sleep(ttl_s / 3)
            try:
                code, _ = await self._script(
                    "begin_takeover", [dead, self.token, self.config.takeover_lock_ttl_ms, ""]
                )
            except Exception as exc:
                log.warning("renewing the takeover lease failed: %r", exc)
                if time.monotonic() - renewed < ttl_s:
                    continue
                code = RuntimeReply.BUSY  # it has lapsed by now
            if code is not RuntimeReply.OK:
                log.warning("takeover lease on %s lost: stopping", dead)
                work.cancel()
                return
            renewed = time.monotonic()

    async def _take_entries(self, dead: str) -> bool:
        """Page through ``dead``'s inbox until it is empty and retired; False when another
        holder fenced it."""
        stream = self.keys.inbox(dead)
        cursor = "0-0"
        while True:
            _, data = await self._script(
                "take_entries",
                [CONSUMER_GROUP, self.token, cursor, self.config.inbox_batch],
                token=dead,
            )
            entries = data.get("entries") or []
            if not entries:
                code, _ = await self._script("retire_inbox", [self.token], token=dead)
                if code is RuntimeReply.OK:
                    return True
                if code is RuntimeReply.FENCED:
                    return False  # our lease lapsed and another holder continues
                cursor = "0-0"
                continue
            async with anyio.create_task_group() as tg:
                for item in entries:
                    tg.start_soon(self._take_entry, dead, stream, item)
            try:
                await self._ack([item["id"] for item in entries], dead)
            except RuntimeFenced:
                if dead == self.token:
                    raise
                return False  # our lease lapsed and another holder fenced the inbox: theirs now
            cursor = entries[-1]["id"]

    async def _take_entry(self, dead: str, stream: str, item: dict[str, Any]) -> None:
        """Decide where one entry of a taken-over inbox goes; returns once it is there."""
        fields: dict[str, str] = item["fields"]
        try:
            envelope = msgspec.json.decode(fields["env"], type=Envelope)
        except (KeyError, msgspec.DecodeError, msgspec.ValidationError):
            await self._dead_letter(
                _undecodable(item["id"], fields),
                "undecodable",
                deliveries=item["deliveries"],
                failure=None,
                owner=dead,
                stream=stream,
                entry_id=item["id"],
            )
            return
        if envelope.kind in INTERNAL_KINDS:
            return  # a notice for a replica that is gone: nothing to tell
        if await self._handled(envelope.message_id):
            self.metrics.duplicates.inc()  # handled before its replica died, just not acked
            return
        failure = _failure(item)
        if dead == self.token and item["id"] in self._unattempted:
            item["deliveries"] -= 1
        if item["deliveries"] >= self.config.max_deliveries:
            await self._dead_letter(
                envelope,
                "max_deliveries",
                deliveries=item["deliveries"],
                failure=failure,
                owner=dead,
                stream=stream,
                entry_id=item["id"],
            )
            return
        await self._route_final(
            envelope,
            prior=item["deliveries"],
            failure=failure,
            stream=stream,
            entry_id=item["id"],
        )

    async def _release_all_of(self, token: str) -> None:
        """Drop every owner entry still naming ``token`` (compare-and-delete, in batches)."""
        client = self._client()
        for kind in ("node", "session"):
            batch: list[str] = []
            async for ident, owner in client.hscan_iter(
                self.keys.owners(kind), count=self.config.inbox_batch
            ):
                if owner == token:
                    batch.append(ident)
                if len(batch) >= self.config.inbox_batch:
                    await self._release(kind, batch, token)
                    batch = []
            await self._release(kind, batch, token)

    # -- drain -------------------------------------------------------------------------------

    async def drain(self) -> None:
        """Hand everything over and leave: draining flag in presence, release what we own,
        stop reading, re-route what is left in our inbox (pending or unread) to the targets'
        current owners (or the DLQ after the grace), wait for held sends, delete presence.
        Idempotent; a second caller waits for the first."""
        if self._drain_started:
            await self._drain_done.wait()
            return
        self._drain_started = True
        self.draining = True
        # Every message held from here on is dead-lettered by then: a long inbox of ownerless
        # entries cannot hold the drain past its grace.
        self._hold_deadline = time.monotonic() + self.config.route_grace_ms / 1000
        try:
            if self._tg is None:
                return
            if not self.fenced:
                with _logged("draining presence flag"):
                    await self._refresh()
            for kind in ("node", "session"):
                idents = [i for k, i in self._owned if k == kind]
                with _logged("releasing ownership"):
                    await self._release(kind, idents)
            self._owned.clear()
            self._stop_reading = True
            await self._reader_done.wait()
            async with self._reclaim_lock:
                pass  # a reclaim pass in progress has finished
            handed_over = False
            if not self.fenced:
                with _logged("handing over the inbox"):
                    handed_over = await self.take_over(self.token)
            while self._held:  # including holds that began during the hand-over
                with anyio.move_on_after(self.config.route_recheck_ms / 1000):
                    await self._held[0].done.wait()
            if handed_over:
                with _logged("leaving presence"):
                    await self._script("leave_presence", [self.instance_id, self.epoch])
                log.info("drained", extra={"instance": self.token})
            elif not self.fenced:  # a fenced replica's record is cleaned up by its taker
                # Leaving now would orphan what is left in the inbox: let presence expire
                # instead, and a live replica takes the inbox over.
                log.warning(
                    "drain: inbox not handed over; a peer takes it over when presence expires",
                    extra={"instance": self.token},
                )
        finally:
            self._drain_done.set()


class _logged:
    """Log and swallow a failed drain step: the next steps still run."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> bool:
        if exc is not None and isinstance(exc, Exception):
            log.warning("drain: %s failed: %r", self.what, exc)
            return True
        return False


def _as_send(result: SendResult | _Held) -> SendResult:
    if isinstance(result, _Held):
        env = result.envelope
        return SendResult(route="held", message_id=env.message_id, owner=result.last_owner)
    return result


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:1000]


def _failure(item: dict[str, Any]) -> Failure | None:
    raw = item.get("failure") or item["fields"].get("failure")
    if not raw:
        return None
    try:
        return msgspec.json.decode(raw, type=Failure)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def _undecodable(entry_id: str, fields: dict[str, str]) -> Envelope:
    return Envelope(
        message_id=f"undecodable-{entry_id}",
        kind="undecodable",
        target_kind="node",
        target_id="",
        payload=msgspec.json.encode(fields).decode(),
        created_ms=now_ms(),
    )
