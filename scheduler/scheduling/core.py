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

__all__ = [
    "MAX_UTTERANCE_INDEX",
    "Completion",
    "DispatchRequest",
    "Dispatched",
    "FailoverAction",
    "FinalizeReason",
    "HeartbeatAck",
    "JobHolder",
    "JobInfo",
    "Moves",
    "NodeCapabilities",
    "NodeInfo",
    "PoolCounts",
    "PoolEntry",
    "Progress",
    "Registration",
    "SchedulingCore",
    "SweepReport",
]

# ids travel inside lexicographic members separated by NUL and ":"-joined pairs: only plain
# characters, so no id can forge a separator.
# BCP-47-like codes ("en", "zh", "zh-Hant", "auto"); ":" is the pair separator, never allowed.
_LANG = re.compile(r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$")
# A protocol bound, not a setting: the scripts' cjson prints numbers with 14 significant digits,
# so an index past 10^14 would come back in exponent form and its job could neither complete nor
# move. 2^31 - 1 is exact everywhere (Lua, JSON, the clients' numbers) and no session comes near
# it (one utterance a second for 68 years).
MAX_UTTERANCE_INDEX = 2**31 - 1

log = logging.getLogger("lingua.scheduling")

FinalizeReason = Literal["manual", "silence", "max_duration", "size", "close"]
JobState = Literal["waiting", "dispatched", "acked", "running", "completed", "failed"]
# timeout: silent past its deadline; node_offline: its node left; job_lost: its node came back
# and runs nothing (the job was lost with the old connection); slot_wait: a job that waited for
# a slot was placed (old_node "") or its wait ran out.
MoveCause = Literal["timeout", "node_offline", "job_lost", "slot_wait"]


class NodeCapabilities(msgspec.Struct, kw_only=True, frozen=True):
    """What a node announces (``node_register`` / ``node_heartbeat`` language_capabilities)."""

    asr: list[str]
    semantic: list[str]
    tts: list[str] = msgspec.field(default_factory=list)
    # None (the real node never reports it): scheduling.default_max_concurrent_jobs, a large
    # default; capped by max_concurrent_jobs_limit.
    max_concurrent_jobs: int | None = None
    hardware: dict[str, Any] = msgspec.field(default_factory=dict)


class Registration(msgspec.Struct, frozen=True):
    node_id: str
    generation: int
    pairs: list[str]
    alive_until_ms: int


class HeartbeatAck(msgspec.Struct, frozen=True):
    generation: int
    moved: bool  # pool membership was rewritten (languages or slots changed, or rejoined)
    alive_until_ms: int


class DispatchRequest(msgspec.Struct, kw_only=True, frozen=True):
    session_id: str
    utterance_index: int
    src_lang: str
    tgt_lang: str
    turn_id: str
    reason: FinalizeReason
    payload: str = ""  # the job_assign message, kept to re-send on failover
    exclude: list[str] = msgspec.field(default_factory=list)
    job_id: str | None = None  # None: a fresh id; ignored when the job exists already
    # The pool to select from when it is not (src_lang, tgt_lang): two-way auto mode selects
    # from (lang_a, lang_b) for every target language, each still its own job.
    pool: tuple[str, str] | None = None


class Dispatched(msgspec.Struct, frozen=True):
    job_id: str
    node_id: str  # "" while the job waits for a slot (state "waiting")
    attempt: int
    state: JobState
    deadline_ms: int  # waiting: when the wait runs out
    created: bool  # False: an idempotent replay; do not send job_assign again
    # Older waiters of the pair placed by this call: carry them out like failover actions.
    placed: list[FailoverAction] = []


class FailoverAction(msgspec.Struct, frozen=True, kw_only=True):
    job_id: str
    session_id: str
    utterance_index: int
    tgt_lang: str
    old_node: str  # "" for a job that waited for a slot
    cause: MoveCause
    # held: its node went offline and no other node can take it; it stays on that node, which
    # may still send the result when it reconnects (until the job's deadline)
    outcome: Literal["reassigned", "failed", "held"]
    attempt: int
    new_node: str | None = None
    deadline_ms: int | None = None
    payload: str | None = None
    # failed / held: MAX_ATTEMPTS, NO_POOL, ALL_FULL, NO_LIVE_NODE, or SESSION_ENDED (failed
    # quietly: nobody to tell)
    error: str | None = None
    waited_ms: int | None = None  # slot_wait: how long the job waited
    cancel_old: bool = False  # the old node is connected and silent: send it job_cancel


class Moves(msgspec.Struct, frozen=True):
    """Failover actions a script decided; ``unreadable``: actions whose reply could not be read
    (logged; the script committed them, so they are counted, never retried)."""

    actions: list[FailoverAction]
    unreadable: int = 0


class Progress(msgspec.Struct, frozen=True):
    state: JobState
    deadline_ms: int
    replayed: bool


class Completion(msgspec.Struct, frozen=True):
    state: JobState
    session_id: str
    utterance_index: int
    tgt_lang: str
    replayed: bool  # True: an earlier completion released the slot; nothing changed now
    handed: FailoverAction | None = None  # the waiter the freed slot went to: carry it out
    # another node holding the job's current attempt, connected: send it job_cancel
    cancel_node: str | None = None


class JobHolder(msgspec.Struct, frozen=True):
    node_id: str
    attempt: int
    session_id: str  # the session the job serves: partials go there, whatever a node claims


class SweepReport(msgspec.Struct, frozen=True, kw_only=True):
    actions: list[FailoverAction]
    offline_nodes: list[str]
    removed_jobs: int
    removed_sessions: int
    removed_sent: int
    more: bool  # a batch was full: sweep again without waiting
    unreadable: int = 0  # actions whose reply could not be read (see Moves)
    waiting: int = 0  # jobs of the domain waiting for a slot after this sweep


class NodeInfo(msgspec.Struct, frozen=True, kw_only=True):
    node_id: str
    generation: int
    asr: list[str]
    semantic: list[str]
    tts: list[str]
    max: int
    running: int
    alive_until_ms: int | None
    in_pools: bool
    pairs: list[str]
    hardware: dict[str, Any]
    reported_load: Any
    registered_ms: int
    last_hb_ms: int


class PoolCounts(msgspec.Struct, frozen=True, kw_only=True):
    members: int  # pool entries: one per (pair, node in the pools)
    nodes: int  # registered
    nodes_in_pools: int
    nodes_with_free_slot: int
    slots: int  # of the nodes in the pools
    running: int


class PoolEntry(msgspec.Struct, frozen=True):
    pair: str
    node_id: str
    load_permille: int


class JobInfo(msgspec.Struct, frozen=True, kw_only=True):
    job_id: str
    session_id: str
    utterance_index: int
    src_lang: str
    tgt_lang: str
    node_id: str
    attempt: int
    state: JobState
    deadline_ms: int
    created_ms: int
    turn_id: str
    reason: str
    tried: list[str]
    finished_ms: int | None = None


# --- wire shapes of the script replies (short field names, as the Lua writes them) ---


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


class _Sweep(msgspec.Struct):
    removed_jobs: int
    removed_sessions: int
    removed_sent: int
    more: bool
    actions: list[msgspec.Raw] = []
    offline: list[str] = []
    waiting: int = 0


class _EndSession(msgspec.Struct):
    existed: bool


class _NodeRecord(msgspec.Struct):
    gen: int
    max: int
    registered_ms: int
    last_hb_ms: int
    hardware: dict[str, Any] | list[Any] = {}
    reported_load: Any = None


class _NodeLangs(msgspec.Struct):
    asr: list[str] = []
    semantic: list[str] = []
    tts: list[str] = []


class _Caps(msgspec.Struct, frozen=True):
    """Validated capabilities as the scripts take them, with their digest."""

    json: bytes
    digest: str  # equal for equal capabilities, whatever the order of the lists
    pairs: list[str]  # every directed pair asr x semantic, in the order the scripts make them


def _pairs(asr: Sequence[str], semantic: Sequence[str]) -> list[str]:
    return [f"{src}:{tgt}" for src in asr for tgt in semantic]


def _load_permille(running: int, slots: int) -> int:
    """The load selection compares (lua/includes/pools.lua ``load_of``): 1000 is full."""
    return 1000 if running >= slots else 1000 * running // slots


class _JobRecord(msgspec.Struct):
    session: str
    index: int
    src: str
    tgt: str
    node: str
    attempt: int
    state: JobState
    deadline_ms: int
    created_ms: int
    turn_id: str
    reason: str
    tried: list[str] = []  # absent while the job waits for a slot
    finished_ms: int | None = None


def _arg_now(now_ms: int | None) -> str:
    return "" if now_ms is None else str(int(now_ms))


class SchedulingCore:
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
        return _Caps(msgspec.json.encode(fields), digest, _pairs(asr, semantic))

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

    async def move_lost_jobs(
        self, node_id: str, generation: int, *, now_ms: int | None = None
    ) -> Moves:
        """The node connected again and reports running no job: the jobs it was given before
        this connection are lost; move them now (carry out the actions). Raises like
        :meth:`node_offline`."""
        return await self._node_moves("move_lost_jobs", node_id, generation, now_ms)

    async def _node_moves(
        self, script: str, node_id: str, generation: int, now_ms: int | None
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
            ],
        )
        return _read_actions(script, msgspec.json.decode(body, type=_Actions).actions)

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
        self, job_id: str, node_id: str, attempt: int, *, ok: bool, now_ms: int | None = None
    ) -> Completion:
        """A ``job_result`` arrived, from any attempt the node held (first valid result wins).
        Forward it to the session only when ``replayed`` is False; send ``job_cancel`` to
        ``cancel_node`` when set. Raises :class:`StaleAttempt` / :class:`ForeignNode` /
        :class:`JobNotFound` (drop it)."""
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
            ],
        )
        r = msgspec.json.decode(body, type=_Completion)
        return Completion(
            r.state,
            r.session,
            r.index,
            r.tgt,
            code == ReplyCode.ALREADY_FINISHED,
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
        )

    async def end_session(self, session_id: str, *, now_ms: int | None = None) -> bool:
        """Forget the session's node and turn affinity (True if it had any) and mark it ended:
        its jobs still on nodes fail quietly at their deadline instead of moving on."""
        self._check_id("session_id", session_id)
        keep_ms = self.config.job_timeout_ms * self.config.max_attempts
        _, body = await self._call("end_session", [session_id, _arg_now(now_ms), keep_ms])
        return msgspec.json.decode(body, type=_EndSession).existed

    # --- reads (CLI, dashboards): plain commands on the domain's keys, no decisions ---

    async def _hscan(self, key: str, limit: int) -> dict[str, str]:
        out: dict[str, str] = {}
        async for field, value in self.client.hscan_iter(key, count=min(limit, 1000)):
            out[field] = value
            if len(out) >= limit:
                break
        return out

    async def list_nodes(self, *, limit: int | None = None, pairs: bool = True) -> list[NodeInfo]:
        """Registered nodes (at most ``limit``, sorted by id); ``pairs=False`` leaves each
        node's pair list empty (a node serves up to ~10,000: build them only when shown)."""
        limit = limit or self.config.list_limit
        records = await self._hscan(self.keys.key("nodes"), limit)
        names = sorted(records)
        if not names:
            return []
        langs = await self.client.hmget(self.keys.key("node_langs"), names)
        slots = await self.client.hmget(self.keys.key("node_slots"), names)
        running = await self.client.hmget(self.keys.key("node_running"), names)
        alive = await self.client.zmscore(self.keys.key("node_alive"), names)
        out = []
        for name, raw_langs, in_pools, run, until in zip(
            names, langs, slots, running, alive, strict=True
        ):
            rec = msgspec.json.decode(records[name], type=_NodeRecord)
            lang = msgspec.json.decode(raw_langs or b"{}", type=_NodeLangs)
            out.append(
                NodeInfo(
                    node_id=name,
                    generation=rec.gen,
                    asr=lang.asr,
                    semantic=lang.semantic,
                    tts=lang.tts,
                    max=rec.max,
                    running=int(run or 0),
                    alive_until_ms=None if until is None else int(until),
                    in_pools=in_pools is not None,
                    pairs=_pairs(lang.asr, lang.semantic) if pairs else [],
                    hardware=rec.hardware if isinstance(rec.hardware, dict) else {},
                    reported_load=rec.reported_load,
                    registered_ms=rec.registered_ms,
                    last_hb_ms=rec.last_hb_ms,
                )
            )
        return out

    async def list_pools(
        self, *, pair: str | None = None, limit: int | None = None
    ) -> list[PoolEntry]:
        """Pool members of nodes in the pools, least-loaded first within each pair.

        Members a lapsed node left behind (removed at the next selection that meets them) are
        not listed.
        """
        limit = limit or self.config.list_limit
        lo, hi = ("-", "+") if pair is None else (f"[{pair}\0", f"({pair}\1")
        members = await self.client.zrangebylex(self.keys.key("pools"), lo, hi, 0, limit)
        entries = []
        for member in members:
            text = member if isinstance(member, str) else member.decode()
            pair_name, node = text.split("\0")
            entries.append((pair_name, node))
        names = sorted({node for _, node in entries})
        if not names:
            return []
        slot_values = await self.client.hmget(self.keys.key("node_slots"), names)
        running_values = await self.client.hmget(self.keys.key("node_running"), names)
        slots = dict(zip(names, slot_values, strict=True))
        running = dict(zip(names, running_values, strict=True))
        out = [
            PoolEntry(pair_name, node, _load_permille(int(running[node] or 0), int(max_slots)))
            for pair_name, node in entries
            if (max_slots := slots[node]) is not None
        ]
        out.sort(key=lambda e: (e.pair, e.load_permille, e.node_id))
        return out

    async def job_holder(self, job_id: str) -> JobHolder | None:
        """Who holds an active job and for which session; None when finished or unknown.

        A plain read, used to check that an ``asr_partial`` (which carries no attempt) comes from
        the node currently holding the job; every change of a job stays inside the scripts.
        """
        raw = await self.client.hget(self.keys.key("jobs"), job_id)
        if raw is None:
            return None
        record = msgspec.json.decode(raw, type=_JobRecord)
        if record.state in ("completed", "failed"):
            return None
        return JobHolder(record.node, record.attempt, record.session)

    async def pool_counts(self) -> PoolCounts:
        """Counts over the whole domain: O(1) reads, and one pass over the per-node slot and
        running counts (integers, never the language lists)."""
        slots = await self.client.hvals(self.keys.key("node_slots"))
        running = await self.client.hvals(self.keys.key("node_running"))
        return PoolCounts(
            members=int(await self.client.zcard(self.keys.key("pools"))),
            nodes=int(await self.client.hlen(self.keys.key("nodes"))),
            nodes_in_pools=len(slots),
            nodes_with_free_slot=int(await self.client.scard(self.keys.key("node_free"))),
            slots=sum(int(v) for v in slots),
            running=sum(int(v) for v in running),
        )

    async def jobs_in_flight(self, *, limit: int) -> tuple[int, list[JobInfo]]:
        """How many jobs are active (each has a deadline), and the ``limit`` due soonest."""
        deadlines = self.keys.key("deadlines")
        total = int(await self.client.zcard(deadlines))
        # The client decodes responses (cross_instance.redis_client): members are str.
        ids = [str(i) for i in await self.client.zrange(deadlines, 0, limit - 1)]
        raws = await self.client.hmget(self.keys.key("jobs"), ids) if ids else []
        jobs = [
            _job_info(i, msgspec.json.decode(raw, type=_JobRecord))
            for i, raw in zip(ids, raws, strict=True)
            if raw is not None
        ]
        return total, jobs

    async def list_jobs(
        self, *, active_only: bool = False, limit: int | None = None
    ) -> list[JobInfo]:
        limit = limit or self.config.list_limit
        records = await self._hscan(self.keys.key("jobs"), limit)
        out = []
        for job_id, raw in records.items():
            r = msgspec.json.decode(raw, type=_JobRecord)
            if active_only and r.state in ("completed", "failed"):
                continue
            out.append(_job_info(job_id, r))
        out.sort(key=lambda j: (j.created_ms, j.job_id))
        return out


def _job_info(job_id: str, r: _JobRecord) -> JobInfo:
    return JobInfo(
        job_id=job_id,
        session_id=r.session,
        utterance_index=r.index,
        src_lang=r.src,
        tgt_lang=r.tgt,
        node_id=r.node,
        attempt=r.attempt,
        state=r.state,
        deadline_ms=r.deadline_ms,
        created_ms=r.created_ms,
        turn_id=r.turn_id,
        reason=r.reason,
        tried=r.tried,
        finished_ms=r.finished_ms,
    )
