"""The scheduling core: every scheduling decision as one Redis Lua script, behind a typed API.

:class:`~scheduler.scheduling.core.SchedulingCore` is the only entry point. The scripts in
``lua/scheduling/`` decide; Python validates input, calls one script and returns what it decided
as msgspec Structs (actions the caller carries out: send ``job_assign`` / ``job_cancel``, tell the
session). Refusals raise the typed errors of :mod:`scheduler.scheduling.codes`.
"""

from __future__ import annotations

from scheduler.scheduling.codes import (
    AllNodesFull,
    ForeignNode,
    InvalidInput,
    JobFinished,
    JobNotFound,
    NodeNotRegistered,
    NoLiveNode,
    NoNodeAvailable,
    NoPool,
    ReplyCode,
    SchedulingError,
    StaleAttempt,
    StaleGeneration,
)
from scheduler.scheduling.core import SchedulingCore
from scheduler.scheduling.keys import SchedulingKeys
from scheduler.scheduling.types import (
    Completion,
    Dispatched,
    DispatchRequest,
    FailoverAction,
    FinalizeReason,
    HeartbeatAck,
    JobHolder,
    JobInfo,
    Moves,
    NodeCapabilities,
    NodeInfo,
    PoolEntry,
    Progress,
    Registration,
    SweepReport,
)

__all__ = [
    "AllNodesFull",
    "Completion",
    "DispatchRequest",
    "Dispatched",
    "FailoverAction",
    "FinalizeReason",
    "ForeignNode",
    "HeartbeatAck",
    "InvalidInput",
    "JobFinished",
    "JobHolder",
    "JobInfo",
    "JobNotFound",
    "Moves",
    "NoLiveNode",
    "NoNodeAvailable",
    "NoPool",
    "NodeCapabilities",
    "NodeInfo",
    "NodeNotRegistered",
    "PoolEntry",
    "Progress",
    "Registration",
    "ReplyCode",
    "SchedulingCore",
    "SchedulingError",
    "SchedulingKeys",
    "StaleAttempt",
    "StaleGeneration",
    "SweepReport",
]
