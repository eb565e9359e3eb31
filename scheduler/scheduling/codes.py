"""Reply codes of the scheduling scripts and the errors they become.

Every script replies ``{code}`` or ``{code, json}``. ``code >= 0`` is a success (possibly a
replay that changed nothing); ``code < 0`` is a refusal that changed nothing. The scripts name
the codes through ``lua/includes/scheduling_codes.lua`` (``CODE.NO_POOL``), never as bare
numbers; tests check that it and every ``lua/`` header agree with :class:`ReplyCode`, name for
name and number for number.

Error tree::

    SchedulingError                  a script refused (``code`` says which)
    ├── InvalidInput (ValueError)    bad input caught in Python before any script ran
    ├── NodeNotRegistered            node unknown (offline or never registered): register again
    ├── StaleGeneration              a newer connection of the node owns it: drop this one
    ├── NoNodeAvailable              dispatch found no node (tell the session, keep finalizing)
    │   ├── NoPool                   no node serves the pair
    │   ├── AllNodesFull             live nodes serve it but none has a usable free slot
    │   └── NoLiveNode               the pool only held nodes whose liveness lapsed
    ├── JobNotFound                  unknown job id (never existed or record expired)
    ├── StaleAttempt                 progress of an earlier attempt (the job was failed over);
    │                                a result of an attempt the node never held, or after the
    │                                job has its result
    ├── ForeignNode                  progress from a node that does not hold the job; a result
    │                                from a node the job was never on
    └── JobFinished                  progress on a job that is completed or failed
"""

from __future__ import annotations

from enum import IntEnum

__all__ = [
    "AllNodesFull",
    "ForeignNode",
    "InvalidInput",
    "JobFinished",
    "JobNotFound",
    "NoLiveNode",
    "NoNodeAvailable",
    "NoPool",
    "NodeNotRegistered",
    "ReplyCode",
    "SchedulingError",
    "StaleAttempt",
    "StaleGeneration",
    "error_for",
]


class ReplyCode(IntEnum):
    OK = 0
    REPLAYED = 1
    ALREADY_FINISHED = 2
    WAITING = 3
    NOT_REGISTERED = -1
    STALE_GENERATION = -2
    NO_POOL = -3
    ALL_FULL = -4
    NO_LIVE_NODE = -5
    JOB_NOT_FOUND = -6
    STALE_ATTEMPT = -7
    FOREIGN_NODE = -8
    JOB_FINISHED = -9


class SchedulingError(Exception):
    """A scheduling script refused; nothing changed."""

    code: ReplyCode | None = None

    def __init__(self, message: str, *, script: str = "") -> None:
        super().__init__(message)
        self.script = script


class InvalidInput(SchedulingError, ValueError):
    """Input rejected before any script ran (bad id, language code, list size)."""


class NodeNotRegistered(SchedulingError):
    code = ReplyCode.NOT_REGISTERED


class StaleGeneration(SchedulingError):
    code = ReplyCode.STALE_GENERATION


class NoNodeAvailable(SchedulingError):
    """Dispatch found no node; the subclasses say why."""


class NoPool(NoNodeAvailable):
    code = ReplyCode.NO_POOL


class AllNodesFull(NoNodeAvailable):
    code = ReplyCode.ALL_FULL


class NoLiveNode(NoNodeAvailable):
    code = ReplyCode.NO_LIVE_NODE


class JobNotFound(SchedulingError):
    code = ReplyCode.JOB_NOT_FOUND


class StaleAttempt(SchedulingError):
    code = ReplyCode.STALE_ATTEMPT


class ForeignNode(SchedulingError):
    code = ReplyCode.FOREIGN_NODE


class JobFinished(SchedulingError):
    code = ReplyCode.JOB_FINISHED


_ERRORS: dict[ReplyCode, type[SchedulingError]] = {
    cls.code: cls
    for cls in (
        NodeNotRegistered,
        StaleGeneration,
        NoPool,
        AllNodesFull,
        NoLiveNode,
        JobNotFound,
        StaleAttempt,
        ForeignNode,
        JobFinished,
    )
    if cls.code is not None
}


def error_for(code: int, script: str, detail: str = "") -> SchedulingError:
    """The typed error for a refusal code of ``script``."""
    reply = ReplyCode(code)
    cls = _ERRORS.get(reply)
    if cls is None:
        raise AssertionError(f"{script}: reply code {reply.name} is not a refusal")
    message = f"{script}: {reply.name}" + (f" ({detail})" if detail else "")
    return cls(message, script=script)
