"""Every key of the cross-instance runtime, built in one place.

Three hash-tag families, so each script touches one Redis Cluster slot:

``{rt}`` (one slot, small and hot): replica presence, the owner maps, the inbox registry,
takeover leases and drain requests::

    <prefix>:{rt}:presence        HASH  instance id -> presence record (json)
    <prefix>:{rt}:alive           ZSET  instance id -> presence expires at (ms, server clock)
    <prefix>:{rt}:node_owner      HASH  node id -> owner token "instance@epoch"
    <prefix>:{rt}:session_owner   HASH  session id -> owner token
    <prefix>:{rt}:node_ended      ZSET  node id its owner released -> remembered until (ms)
    <prefix>:{rt}:session_ended   ZSET  session id its owner released -> remembered until (ms)
    <prefix>:{rt}:owned_count     HASH  "<kind>|<token>" -> how many ids that token owns
    <prefix>:{rt}:inboxes         HASH  token -> inbox state ("live" | "takeover:<token>")
    <prefix>:{rt}:takeovers       HASH  dead token -> lease json {holder, until_ms}
    <prefix>:{rt}:drain_requests  HASH  instance id -> requested at (ms)

``{inbox:<instance>@<epoch>}`` (one slot per replica start): its stream and side data::

    <prefix>:{inbox:<token>}:stream    STREAM entries {env, prior, failure}; group "rt"
    <prefix>:{inbox:<token>}:failures  HASH  entry id -> last handler failure (json)
    <prefix>:{inbox:<token>}:meta      HASH  fenced_by -> token taking the inbox over

``{dlq}`` (one slot): ``<prefix>:{dlq}:stream`` (STREAM, one ``dead`` json field per entry) and
``<prefix>:{dlq}:index`` (HASH message id -> DLQ entry id, so a repeated move adds nothing).

Dedup marks spread over the cluster by message id: ``<prefix>:dedup:{<message_id>}`` (a STRING:
``claim:<token>:<nonce>`` while a delivery runs, the handling token once it succeeded).

Scripts name their keys in their header (``-- KEYS[i] name ...``); :func:`for_script` reads the
names so Python always passes keys in the declared order.
"""

from __future__ import annotations

from cross_instance.lua import Script

__all__ = ["CONSUMER_GROUP", "RT_KEYS", "RuntimeKeys", "split_token"]

# One consumer group per inbox stream; the consumer is the replica token.
CONSUMER_GROUP = "rt"

# name -> Redis type of the {rt} keys; docs/architecture.md describes each.
RT_KEYS: dict[str, str] = {
    "presence": "HASH",
    "alive": "ZSET",
    "node_owner": "HASH",
    "session_owner": "HASH",
    "node_ended": "ZSET",
    "session_ended": "ZSET",
    "owned_count": "HASH",
    "inboxes": "HASH",
    "takeovers": "HASH",
    "drain_requests": "HASH",
}
INBOX_KEYS: dict[str, str] = {"stream": "STREAM", "failures": "HASH", "meta": "HASH"}
DLQ_KEYS: dict[str, str] = {"dlq": "STREAM", "dlq_index": "HASH"}


def split_token(token: str) -> tuple[str, str]:
    """``"instance@epoch"`` -> ``(instance, epoch)``; a malformed token is a ValueError."""
    instance, sep, epoch = token.rpartition("@")
    if not sep or not instance or not epoch:
        raise ValueError(f"not an owner token (instance@epoch): {token!r}")
    return instance, epoch


def _kind(kind: str) -> str:
    if kind not in ("node", "session"):
        raise ValueError(f"owner kind must be node or session, not {kind!r}")
    return kind


class RuntimeKeys:
    """Key names of one deployment (``redis.key_prefix``)."""

    def __init__(self, key_prefix: str) -> None:
        self.key_prefix = key_prefix

    def rt(self, name: str) -> str:
        if name not in RT_KEYS:
            raise KeyError(f"not a runtime key: {name}")
        return f"{self.key_prefix}:{{rt}}:{name}"

    def owners(self, kind: str) -> str:
        return self.rt(f"{_kind(kind)}_owner")

    def ended(self, kind: str) -> str:
        """The ids of ``kind`` their owner released lately (routing drops what is for them)."""
        return self.rt(f"{_kind(kind)}_ended")

    def inbox(self, token: str, name: str = "stream") -> str:
        if name not in INBOX_KEYS:
            raise KeyError(f"not an inbox key: {name}")
        split_token(token)
        return f"{self.key_prefix}:{{inbox:{token}}}:{name}"

    def dlq(self, name: str = "dlq") -> str:
        if name not in DLQ_KEYS:
            raise KeyError(f"not a DLQ key: {name}")
        return f"{self.key_prefix}:{{dlq}}:{'stream' if name == 'dlq' else 'index'}"

    def dedup(self, message_id: str) -> str:
        return f"{self.key_prefix}:dedup:{{{message_id}}}"

    def for_script(
        self, script: Script, *, token: str = "", kind: str = "", message_id: str = ""
    ) -> list[str]:
        """The keys ``script`` declares, in its ``KEYS[i]`` order.

        ``token`` names the inbox for inbox keys; ``kind`` picks the map for ``owners`` and
        ``ended``;
        ``message_id`` names the ``dedup`` key.
        """
        out: list[str] = []
        for name in script.key_names:
            if name == "owners":
                out.append(self.owners(kind))
            elif name == "ended":
                out.append(self.ended(kind))
            elif name in RT_KEYS:
                out.append(self.rt(name))
            elif name in INBOX_KEYS:
                out.append(self.inbox(token, name))
            elif name in DLQ_KEYS:
                out.append(self.dlq(name))
            elif name == "dedup":
                out.append(self.dedup(message_id))
            else:
                raise KeyError(f"{script.name}: unknown key name {name}")
        return out
