"""Reads of the scheduling state for people (CLI, dashboard, audit views): no decisions.

:class:`SchedulingReads` is mixed into :class:`~scheduler.scheduling.core.SchedulingCore`, so
callers keep one object per domain; its methods run plain commands on the domain's keys (paged,
bounded by ``scheduling.list_limit``) and never change anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from cross_instance.redis_client import AnyRedis
from scheduler.config import SchedulingConfig
from scheduler.scheduling.keys import SchedulingKeys
from scheduler.scheduling.types import JobHolder, JobInfo, JobState, NodeInfo, PoolCounts, PoolEntry

__all__ = ["SchedulingReads", "pair_list"]


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


def pair_list(asr: Sequence[str], semantic: Sequence[str]) -> list[str]:
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


class SchedulingReads:
    """The read-only views of one domain (see the module docstring)."""

    client: AnyRedis
    config: SchedulingConfig
    keys: SchedulingKeys

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
                    pairs=pair_list(lang.asr, lang.semantic) if pairs else [],
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
