"""``SchedulingCore``: the typed API over the scheduling scripts.

Each method validates its input, calls exactly one script and returns the script's decision as
a msgspec Struct. Python decides nothing: when a method returns actions (failover), the caller
carries them out — send ``job_cancel`` to ``old_node``, ``job_assign`` (the stored payload, with
the new attempt) to ``new_node``, or a ``JOB_TIMEOUT`` / error to the session when the job failed.

Times: every method takes ``now_ms``; ``None`` means the Redis server's clock (the normal case,
so replicas share one clock). Tests pass explicit times to move the clock.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from typing import Any, Literal

import msgspec

from cross_instance.ids import check_id
from cross_instance.lua import ScriptLibrary
from cross_instance.redis_client import AnyRedis
from scheduler.config import SchedulingConfig
from scheduler.ids import new_job_id
from scheduler.scheduling.codes import InvalidInput, ReplyCode, error_for
from scheduler.scheduling.keys import SchedulingKeys
from scheduler.scheduling.reads import SchedulingReads, pair_list
from scheduler.scheduling.types import (
    MAX_UTTERANCE_INDEX,
    Completion,
    Dispatched,
    DispatchRequest,
    FailoverAction,
    FinalizeReason,
    HeartbeatAck,
    JobState,
    MoveCause,
    Moves,
    NodeCapabilities,
    Progress,
    Registration,
    SweepReport,
)

__all__ = ["SchedulingCore"]

# ids travel inside lexicographic members separated by NUL and ":"-joined pairs: only plain
# characters, so no id can forge a separator.
# BCP-47-like codes ("en", "zh", "zh-Hant", "auto"); ":" is the pair separator, never allowed.
_LANG = re.compile(r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$")
log = logging.getLogger("lingua.scheduling")
# --- wire shapes of the script replies (short field names, as the Lua writes them) ---


class _Cut(msgspec.Struct):
    cut: int


class _Running(msgspec.Struct):
    running: int


class _Reg(msgspec.Struct):
    gen: int
    alive_until_ms: int


class _Hb(msgspec.Struct):
    gen: int
    moved: bool
    alive_until_ms: int


class _Action(msgspec.Struct):
    job_id: str
    session: str
    index: int
    tgt: str
    old_node: str
    cause: MoveCause
    outcome: Literal["reassigned", "failed", "held"]
    attempt: int
    new_node: str | None = None
    deadline_ms: int | None = None
    payload: str | None = None
    error: str | None = None
    waited_ms: int | None = None
    cancel_old: bool = False

    def public(self) -> FailoverAction:
        return FailoverAction(
            job_id=self.job_id,
            session_id=self.session,
            utterance_index=self.index,
            tgt_lang=self.tgt,
            old_node=self.old_node,
            cause=self.cause,
            outcome=self.outcome,
            attempt=self.attempt,
            new_node=self.new_node,
            deadline_ms=self.deadline_ms,
            payload=self.payload,
            error=self.error,
            waited_ms=self.waited_ms,
            cancel_old=self.cancel_old,
        )


class _Dispatch(msgspec.Struct):
    job_id: str
    node: str
    attempt: int
    state: JobState
    deadline_ms: int
    created: bool
    placed: list[_Action] = []


class _Actions(msgspec.Struct):
    actions: list[msgspec.Raw] = []
    remaining: int = 0


def _read_actions(script: str, raws: list[msgspec.Raw]) -> Moves:
    """Each action read on its own: one the script wrote but we cannot read (a record from an
    older version, say) must not stop the others, which the script committed too."""
    actions: list[FailoverAction] = []
    unreadable = 0
    for raw in raws:
        try:
            actions.append(msgspec.json.decode(raw, type=_Action).public())
        except msgspec.ValidationError as exc:
            unreadable += 1
            log.error("%s: unreadable failover action (%s): %s", script, exc, bytes(raw)[:300])
    return Moves(actions, unreadable)


class _Progress(msgspec.Struct):
    state: JobState
    deadline_ms: int = 0


class _Completion(msgspec.Struct):
    state: JobState
    session: str
    index: int
    tgt: str
    handed: _Action | None = None
    cancel_node: str | None = None
    own: bool = False  # ALREADY_FINISHED by an earlier try of this same call (its nonce)


class _Sweep(msgspec.Struct):
    removed_jobs: int
    removed_sessions: int
    removed_sent: int
    more: bool
    actions: list[msgspec.Raw] = []
    offline: list[str] = []
    waiting: int = 0
    stalled_jobs: int = 0
    stalled_nodes: int = 0


class _EndSession(msgspec.Struct):
    existed: bool


class _Caps(msgspec.Struct, frozen=True):
    """Validated capabilities as the scripts take them, with their digest."""

    json: bytes
    digest: str  # equal for equal capabilities, whatever the order of the lists
    pairs: list[str]  # every directed pair asr x semantic, in the order the scripts make them


def _arg_now(now_ms: int | None) -> str:
    return "" if now_ms is None else str(int(now_ms))


class SchedulingCore(SchedulingReads):
    """All scheduling decisions of one domain. Safe to share between tasks of one replica."""

    def __init__(
        self,
        client: AnyRedis,
        config: SchedulingConfig,
        *,
        key_prefix: str,
        library: ScriptLibrary | None = None,
    ) -> None:
        self.client = client
        self.config = config
        self.keys = SchedulingKeys(key_prefix, config.domain)
        self.library = library or ScriptLibrary("scheduling")
        self._script_keys = {
            name: self.keys.for_script(script) for name, script in self.library.scripts.items()
        }

    async def load_scripts(self) -> None:
        """Preload every script (optional: calls also load lazily after NOSCRIPT)."""
        await self.library.load(self.client)

    async def _call(self, name: str, args: Sequence[Any]) -> tuple[ReplyCode, bytes]:
        reply = await self.library.call(self.client, name, self._script_keys[name], args)
        code = ReplyCode(int(reply[0]))
        body = reply[1] if len(reply) > 1 else "{}"
        if code < 0:
            raise error_for(code, name)
        return code, body.encode() if isinstance(body, str) else body

    # --- validation (bad input: a clear error, no script runs) ---

    def _check_id(self, what: str, value: str) -> None:
        try:
            check_id(what, value, max_length=self.config.max_id_length)
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None

    def _check_langs(self, what: str, langs: Sequence[str]) -> list[str]:
        if len(langs) > self.config.max_languages_per_node:
            raise InvalidInput(
                f"{what}: {len(langs)} languages, more than scheduling.max_languages_per_node "
                f"({self.config.max_languages_per_node})"
            )
        for lang in langs:
            if not isinstance(lang, str) or not _LANG.match(lang):
                raise InvalidInput(f"{what}: {lang!r} is not a language code")
        return list(dict.fromkeys(langs))  # order kept, duplicates dropped

    def _caps(self, caps: NodeCapabilities) -> _Caps:
        slots = caps.max_concurrent_jobs
        if slots is None:
            slots = self.config.default_max_concurrent_jobs
        if not isinstance(slots, int) or slots < 1:
            raise InvalidInput(f"max_concurrent_jobs: {slots!r} is not a positive integer")
        asr = self._check_langs("asr", caps.asr)
        semantic = self._check_langs("semantic", caps.semantic)
        tts = self._check_langs("tts", caps.tts)
        fields = {
            "asr": asr,
            "semantic": semantic,
            "tts": tts,
            "max": min(slots, self.config.max_concurrent_jobs_limit),
            "hardware": caps.hardware,
        }
        canonical = {**fields, "asr": sorted(asr), "semantic": sorted(semantic), "tts": sorted(tts)}
        digest = hashlib.sha1(msgspec.json.encode(canonical, order="sorted")).hexdigest()
        return _Caps(msgspec.json.encode(fields), digest, pair_list(asr, semantic))

    # --- nodes ---

    def check_registration(self, node_id: str, caps: NodeCapabilities) -> None:
        """What :meth:`register_node` refuses (InvalidInput), checked without touching Redis."""
        self._check_id("node_id", node_id)
        self._caps(caps)

    async def register_node(
        self, node_id: str, caps: NodeCapabilities, *, now_ms: int | None = None
    ) -> Registration:
        """A node connected: record it, join its pools; keep the returned generation on the
        connection and pass it to :meth:`heartbeat` and :meth:`node_offline`."""
        self._check_id("node_id", node_id)
        checked = self._caps(caps)
        _, body = await self._call(
            "register_node",
            [node_id, checked.json, checked.digest, _arg_now(now_ms), self.config.node_ttl_ms],
        )
        reply = msgspec.json.decode(body, type=_Reg)
        return Registration(node_id, reply.gen, checked.pairs, reply.alive_until_ms)

    async def heartbeat(
        self,
        node_id: str,
        generation: int,
        *,
        caps: NodeCapabilities | None = None,
        reported_load: Any = None,
        now_ms: int | None = None,
    ) -> HeartbeatAck:
        """Refresh liveness; ``caps`` given: move between pools if languages or slots changed.

        Capabilities equal to the stored ones (compared by digest) cost Redis O(1), whatever
        the pairs the node serves. Raises :class:`NodeNotRegistered` (register again) or
        :class:`StaleGeneration`.
        """
        self._check_id("node_id", node_id)
        checked = None if caps is None else self._caps(caps)
        load_json = b"" if reported_load is None else msgspec.json.encode(reported_load)
        _, body = await self._call(
            "heartbeat_node",
            [
                node_id,
                int(generation),
                _arg_now(now_ms),
                self.config.node_ttl_ms,
                b"" if checked is None else checked.json,
                "" if checked is None else checked.digest,
                load_json,
            ],
        )
        reply = msgspec.json.decode(body, type=_Hb)
        return HeartbeatAck(reply.gen, reply.moved, reply.alive_until_ms)

    async def node_offline(
        self, node_id: str, generation: int, *, now_ms: int | None = None
    ) -> Moves:
        """The node's socket closed: leave the pools and fail its jobs over (carry out the
        actions; a job no other node can take is ``held`` on the node, whose result may still
        come). Raises :class:`StaleGeneration` when a newer connection owns the node (then
        nothing changed: just drop the old socket) and :class:`NodeNotRegistered` if gone."""
        return await self._node_moves("take_node_offline", node_id, generation, now_ms)

    async def drain_node(self, node_id: str, generation: int) -> int:
        """This replica is draining: take the node out of every pool (no placement picks it
        any more) and keep its jobs, whose results still come on its open socket. Returns its
        running count. Raises like :meth:`node_offline`."""
        self._check_id("node_id", node_id)
        _, body = await self._call("drain_node", [node_id, int(generation)])
        return msgspec.json.decode(body, type=_Running).running

    async def orphan_nodes(
        self, node_ids: Sequence[str], *, quiet_ms: int, now_ms: int | None = None
    ) -> int:
        """The replica holding ``node_ids`` died (the takeover released them): each one not
        heard from for ``quiet_ms`` gets ``node_orphan_grace_ms`` to register again, then the
        sweep takes it offline and its jobs move. Returns how many were cut short."""
        cut = 0
        ids = list(node_ids)
        for start in range(0, len(ids), self.config.sweep_batch):
            chunk = ids[start : start + self.config.sweep_batch]
            for node_id in chunk:
                self._check_id("node_id", node_id)
            _, body = await self._call(
                "orphan_nodes",
                [_arg_now(now_ms), int(quiet_ms), self.config.node_orphan_grace_ms, *chunk],
            )
            cut += msgspec.json.decode(body, type=_Cut).cut
        return cut

    async def move_lost_jobs(
        self, node_id: str, generation: int, *, running: int = 0, now_ms: int | None = None
    ) -> Moves:
        """The node connected again and reports ``running`` jobs: fewer than the jobs it was
        given before this connection means some are lost; they all move now (carry out the
        actions; a result of one it still runs wins if first). Otherwise nothing moves and
        ``remaining`` counts them. Raises like :meth:`node_offline`."""
        return await self._node_moves(
            "move_lost_jobs", node_id, generation, now_ms, [max(0, int(running))]
        )

    async def _node_moves(
        self,
        script: str,
        node_id: str,
        generation: int,
        now_ms: int | None,
        extra: Sequence[Any] = (),
    ) -> Moves:
        self._check_id("node_id", node_id)
        c = self.config
        _, body = await self._call(
            script,
            [
                node_id,
                int(generation),
                _arg_now(now_ms),
                c.max_attempts,
                c.select_scan_limit,
                c.job_timeout_ms,
                c.job_retention_ms,
                c.select_sample_size,
                *extra,
            ],
        )
        reply = msgspec.json.decode(body, type=_Actions)
        moves = _read_actions(script, reply.actions)
        return msgspec.structs.replace(moves, remaining=reply.remaining)

    # --- jobs ---

    async def dispatch(self, request: DispatchRequest, *, now_ms: int | None = None) -> Dispatched:
        """Place one job. ``created=False``: the same (session, index, tgt) was dispatched
        before; the existing job is returned and nothing is sent again. State ``waiting``:
        every node of the pair is busy, the job waits for a slot (a completion or the sweep
        places it later, or the sweep fails it after ``slot_wait_ms``). Carry out ``placed``
        either way. Raises a :class:`NoNodeAvailable` subclass when no node can take it and
        it cannot wait (nothing changed)."""
        self._check_id("session_id", request.session_id)
        self._check_id("turn_id", request.turn_id)
        if not 0 <= request.utterance_index <= MAX_UTTERANCE_INDEX:
            raise InvalidInput(
                f"utterance_index: {request.utterance_index} out of range "
                f"(0..{MAX_UTTERANCE_INDEX})"
            )
        pool = request.pool or (request.src_lang, request.tgt_lang)
        for what, lang in (
            ("src_lang", request.src_lang),
            ("tgt_lang", request.tgt_lang),
            ("pool", pool[0]),
            ("pool", pool[1]),
        ):
            if not _LANG.match(lang):
                raise InvalidInput(f"{what}: {lang!r} is not a language code")
        if request.reason not in FinalizeReason.__args__:  # type: ignore[attr-defined]
            raise InvalidInput(f"reason: {request.reason!r} is not a finalize reason")
        for node in request.exclude:
            self._check_id("exclude", node)
        job_id = request.job_id or new_job_id()
        self._check_id("job_id", job_id)
        c = self.config
        _, body = await self._call(
            "dispatch_job",
            [
                job_id,
                request.session_id,
                str(request.utterance_index),
                request.src_lang,
                request.tgt_lang,
                request.turn_id,
                request.reason,
                request.payload,
                msgspec.json.encode(request.exclude) if request.exclude else b"",
                _arg_now(now_ms),
                c.job_timeout_ms,
                c.select_scan_limit,
                c.session_affinity_ttl_ms,
                c.select_sample_size,
                c.slot_wait_ms,
                c.slot_wait_max,
                f"{pool[0]}:{pool[1]}" if request.pool else "",
            ],
        )
        r = msgspec.json.decode(body, type=_Dispatch)
        return Dispatched(
            r.job_id,
            r.node,
            r.attempt,
            r.state,
            r.deadline_ms,
            r.created,
            [a.public() for a in r.placed],
        )

    async def _progress(
        self,
        script: str,
        job_id: str,
        node_id: str,
        attempt: int,
        refresh_deadline: bool,
        now_ms: int | None,
    ) -> Progress:
        timeout = str(self.config.job_timeout_ms) if refresh_deadline else ""
        code, body = await self._call(
            script, [job_id, node_id, int(attempt), _arg_now(now_ms), timeout]
        )
        r = msgspec.json.decode(body, type=_Progress)
        return Progress(r.state, r.deadline_ms, code == ReplyCode.REPLAYED)

    async def ack(
        self,
        job_id: str,
        node_id: str,
        attempt: int,
        *,
        refresh_deadline: bool = False,
        now_ms: int | None = None,
    ) -> Progress:
        """``job_ack`` from the node; fenced like :meth:`complete`."""
        return await self._progress("ack_job", job_id, node_id, attempt, refresh_deadline, now_ms)

    async def start(
        self,
        job_id: str,
        node_id: str,
        attempt: int,
        *,
        refresh_deadline: bool = False,
        now_ms: int | None = None,
    ) -> Progress:
        """``job_started`` from the node; fenced like :meth:`complete`."""
        return await self._progress("start_job", job_id, node_id, attempt, refresh_deadline, now_ms)

    async def complete(
        self,
        job_id: str,
        node_id: str,
        attempt: int,
        *,
        ok: bool,
        now_ms: int | None = None,
        nonce: str = "",
    ) -> Completion:
        """A ``job_result`` arrived, from any attempt the node held (first valid result wins).
        Forward it to the session only when ``replayed`` is False; send ``job_cancel`` to
        ``cancel_node`` when set. Raises :class:`StaleAttempt` / :class:`ForeignNode` /
        :class:`JobNotFound` / :class:`JobFinished` (failed at its deadline; drop it).
        ``nonce``: the same for every try of one result's handling; a try that finds the
        completion of an earlier try (its reply lost) is not ``replayed``."""
        code, body = await self._call(
            "complete_job",
            [
                job_id,
                node_id,
                int(attempt),
                "1" if ok else "0",
                _arg_now(now_ms),
                self.config.job_retention_ms,
                self.config.job_timeout_ms,
                self.config.slot_wait_lookahead,
                nonce,
            ],
        )
        r = msgspec.json.decode(body, type=_Completion)
        return Completion(
            r.state,
            r.session,
            r.index,
            r.tgt,
            code == ReplyCode.ALREADY_FINISHED and not r.own,
            None if r.handed is None else r.handed.public(),
            r.cancel_node,
        )

    async def sweep(self, *, now_ms: int | None = None) -> SweepReport:
        """One sweep tick (any replica, any time: each due item is handled by one call)."""
        c = self.config
        _, body = await self._call(
            "sweep",
            [
                _arg_now(now_ms),
                c.max_attempts,
                c.select_scan_limit,
                c.job_timeout_ms,
                c.job_retention_ms,
                c.sweep_batch,
                c.sent_retention_ms,
                c.select_sample_size,
                c.sweep_pool_members,
                c.slot_wait_lookahead,
                c.stall_ms,
                c.stall_grace_ms,
            ],
        )
        r = msgspec.json.decode(body, type=_Sweep)
        moves = _read_actions("sweep", r.actions)
        return SweepReport(
            actions=moves.actions,
            unreadable=moves.unreadable,
            offline_nodes=r.offline,
            removed_jobs=r.removed_jobs,
            removed_sessions=r.removed_sessions,
            removed_sent=r.removed_sent,
            more=r.more,
            waiting=r.waiting,
            stalled_jobs=r.stalled_jobs,
            stalled_nodes=r.stalled_nodes,
        )

    async def end_session(self, session_id: str, *, now_ms: int | None = None) -> bool:
        """Forget the session's node and turn affinity (True if it had any) and mark it ended:
        its jobs still on nodes fail quietly at their deadline instead of moving on."""
        self._check_id("session_id", session_id)
        keep_ms = self.config.job_timeout_ms * self.config.max_attempts
        _, body = await self._call("end_session", [session_id, _arg_now(now_ms), keep_ms])
        return msgspec.json.decode(body, type=_EndSession).existed
