"""Identifiers: who this replica is (instance id, epoch, token) and which ids it accepts.

A token is ``"<instance>@<epoch>"``; a fresh epoch per start fences everything an earlier start
of the same instance left behind. Ids of nodes, sessions and messages travel in Redis keys and
logs, so they are drawn from one small alphabet (:func:`check_id`), the same for the runtime and
the scheduling core.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
from dataclasses import dataclass

from cross_instance.clock import now_ms

__all__ = ["ID_ALPHABET", "Identity", "check_id", "default_instance_id"]

# Ids travel in Redis keys, stream fields and logs: no spaces, no key separators beyond ':'.
ID_ALPHABET = "A-Za-z0-9_.:@-"
_ID = re.compile(f"[{ID_ALPHABET}]+")
_INSTANCE_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def check_id(what: str, value: object, max_length: int = 256) -> None:
    """ValueError (a sentence naming ``what``) unless ``value`` is 1 to ``max_length``
    characters of :data:`ID_ALPHABET`."""
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise ValueError(f"{what}: {value!r} is not a valid id (letters, digits and _ . : @ -)")
    if len(value) > max_length:
        raise ValueError(f"{what}: longer than {max_length} characters")


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
