"""Identifiers: who this replica is (instance id, epoch, token) and which ids it accepts.

A token is ``"<instance>@<epoch>"``; a fresh epoch per start fences everything an earlier start
of the same instance left behind. Ids of nodes, sessions and messages travel in Redis keys and
logs, so they are printable ASCII without spaces (:func:`check_id`).
"""

from __future__ import annotations

import os
import re
import secrets
import socket
from dataclasses import dataclass

from cross_instance.clock import now_ms

__all__ = ["Identity", "check_id", "default_instance_id"]

_ID = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII, no spaces: ids travel in keys/logs
_INSTANCE_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def check_id(what: str, value: str, max_length: int = 256) -> None:
    """ValueError (a sentence naming ``what``) unless ``value`` is 1 to ``max_length``
    printable ASCII characters without spaces."""
    if not isinstance(value, str) or not _ID.match(value) or len(value) > max_length:
        raise ValueError(
            f"{what} must be 1-{max_length} printable characters without spaces: {value!r}"
        )


def default_instance_id() -> str:
    env = os.environ.get("LINGUA_INSTANCE_ID", "")
    if env:
        return env
    host = _INSTANCE_UNSAFE.sub("-", socket.gethostname())[:64] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class Identity:
    """One start of one replica."""

    instance_id: str
    epoch: str

    @property
    def token(self) -> str:
        return f"{self.instance_id}@{self.epoch}"

    @classmethod
    def new(cls, instance_id: str = "") -> Identity:
        # A fresh epoch per start: the token fences everything an earlier start left behind.
        return cls(
            instance_id=instance_id or default_instance_id(),
            epoch=f"{now_ms():x}{secrets.token_hex(2)}",
        )
