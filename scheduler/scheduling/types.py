"""The values the scheduling core takes and returns: requests, decisions, views (declarative).

Every decision of :class:`~scheduler.scheduling.core.SchedulingCore` comes back as one of these
frozen msgspec Structs; the caller carries it out. No I/O here.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

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
    "JobState",
    "MoveCause",
    "Moves",
    "NodeCapabilities",
    "NodeInfo",
    "PoolCounts",
    "PoolEntry",
    "Progress",
    "Registration",
    "SweepReport",
]

# A protocol bound, not a setting: the scripts' cjson prints numbers with 14 significant digits,
# so an index past 10^14 would come back in exponent form and its job could neither complete nor
# move. 2^31 - 1 is exact everywhere (Lua, JSON, the clients' numbers) and no session comes near
# it (one utterance a second for 68 years).
MAX_UTTERANCE_INDEX = 2**31 - 1

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
    # move_lost_jobs only: jobs of the node's old connection left on it (it may run them all)
    remaining: int = 0


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
    # deadlines and node liveness that lapsed while no sweep could run (Redis away), moved on
    stalled_jobs: int = 0
    stalled_nodes: int = 0


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
