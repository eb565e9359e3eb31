"""Fenced ownership: which replica owns a node or a session id, claimed and released by token.

The newest claim by a live token wins in one step (``claim_owner``); release is compare-and-
delete on our token, and leaves the id remembered as ended for ``ended_ttl_ms``
(:attr:`Target.ended`: what routing drops rather than holds). When a claim takes an id from a live replica, that replica is told with an
``ownership_lost`` notice in its inbox, and closes its stale socket. :meth:`Ownership.tell_lost`
is the one place the user's ``on_ownership_lost`` callback runs.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import NamedTuple

from cross_instance.clock import now_ms
from cross_instance.config import RuntimeConfig
from cross_instance.envelope import OWNERSHIP_LOST, Envelope, TargetKind, new_message_id
from cross_instance.errors import RuntimeDraining, RuntimeFenced, RuntimeReply, fenced_unless
from cross_instance.ids import check_id
from cross_instance.inbox import InboxStream
from cross_instance.lifecycle import Lifecycle
from cross_instance.scripts import Scripts

__all__ = ["OnLost", "Ownership", "Target"]

log = logging.getLogger("lingua.runtime")

OnLost = Callable[[str, str], Awaitable[None]]
KINDS: tuple[TargetKind, ...] = ("node", "session")


class Target(NamedTuple):
    """What Redis says about a target id now (``resolve_owner``).

    ``owner``: the owner token ("" when none); ``live``: that owner is live; ``ended``: no
    owner, because the last one released it within ``ended_ttl_ms`` (an owner that merely
    looks not live, or an id never owned, has not ended).
    """

    owner: str
    live: bool
    ended: bool


class Ownership:
    def __init__(
        self,
        token: str,
        config: RuntimeConfig,
        scripts: Scripts,
        lifecycle: Lifecycle,
        inbox: InboxStream,
        on_lost: OnLost | None,
    ) -> None:
        self.token = token
        self.config = config
        self.scripts = scripts
        self.lifecycle = lifecycle
        self.inbox = inbox
        self.on_lost = on_lost
        self.owned: set[tuple[str, str]] = set()

    def owns(self, kind: str, ident: str) -> bool:
        return (kind, ident) in self.owned

    async def claim(self, kind: TargetKind, ident: str) -> str | None:
        """Own ``ident`` from now on; returns the previous owner token (None when none)."""
        check_id(f"{kind} id", ident)
        _ = self.scripts.redis  # raises when the runtime is not running
        life = self.lifecycle
        if life.fenced:
            raise RuntimeFenced(f"{self.token} is fenced: cannot claim {kind} {ident}")
        if life.draining:
            raise RuntimeDraining(f"{self.token} is draining: cannot claim {kind} {ident}")
        code, data = await self.scripts.run("claim_owner", [kind, ident, self.token, ""], kind=kind)
        fenced_unless(code, f"{self.token} is not live: cannot claim {kind} {ident}")
        if not life.draining:
            self.owned.add((kind, ident))
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
            await self.inbox.append(previous, notice)
        return await self._unless_draining(kind, ident, previous)

    async def _unless_draining(
        self, kind: TargetKind, ident: str, previous: str | None
    ) -> str | None:
        """A drain that started while the claim was on its way has released what we owned
        already: give this claim back too, or it would name a replica that is leaving."""
        if not self.lifecycle.draining:
            return previous
        await self.release(kind, [ident])
        raise RuntimeDraining(f"{self.token} is draining: cannot claim {kind} {ident}")

    async def release(self, kind: str, idents: Sequence[str], token: str = "") -> int:
        """Give ``idents`` up where ``token`` (default ours) still owns them; how many went."""
        for ident in idents:
            self.owned.discard((kind, ident))
        if not idents:
            return 0
        _, data = await self.scripts.run(
            "release_owner",
            [kind, token or self.token, self.config.ended_ttl_ms, "", *idents],
            kind=kind,
        )
        return int(data.get("released", 0))

    async def resolve(self, kind: str, ident: str) -> Target:
        """The owner of ``ident``, whether it is live, whether the id has ended."""
        _, data = await self.scripts.run("resolve_owner", [ident, ""], kind=kind)
        return Target(data.get("owner") or "", bool(data.get("live")), bool(data.get("ended")))

    async def release_all_of(self, token: str) -> dict[str, list[str]]:
        """Drop every owner entry still naming ``token`` (compare-and-delete, in batches); the
        ids that named it, per kind (one claimed meanwhile by another replica may be among
        them: its entry was kept)."""
        client = self.scripts.redis
        named: dict[str, list[str]] = {}
        for kind in KINDS:
            batch: list[str] = []
            named[kind] = []
            async for ident, owner in client.hscan_iter(
                self.scripts.keys.owners(kind), count=self.config.inbox_batch
            ):
                if owner == token:
                    batch.append(ident)
                if len(batch) >= self.config.inbox_batch:
                    await self.release(kind, batch, token)
                    named[kind] += batch
                    batch = []
            await self.release(kind, batch, token)
            named[kind] += batch
        return named

    def owned_of(self, kind: str) -> list[str]:
        return [i for k, i in self.owned if k == kind]

    def drop_all(self) -> set[tuple[str, str]]:
        """Forget everything we own (we are fenced: it is not ours any more); what it was."""
        lost, self.owned = self.owned, set()
        return lost

    async def notice(self, notice: Envelope) -> None:
        """An ``ownership_lost`` notice: another replica claimed an id of ours."""
        key = (notice.target_kind, notice.target_id)
        if key not in self.owned:
            return
        target = await self.resolve(notice.target_kind, notice.target_id)
        if target.owner == self.token:
            return  # we claimed it again since: the notice is stale
        self.owned.discard(key)
        await self.tell_lost(notice.target_kind, notice.target_id)

    async def tell_lost(self, kind: str, ident: str) -> None:
        if self.on_lost is None:
            return
        try:
            await self.on_lost(kind, ident)
        except Exception:
            log.exception("on_ownership_lost failed", extra={"instance": self.token})
