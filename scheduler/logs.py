"""Logging: one JSON object per line, ids as fields, so logs can be joined across replicas.

Call sites pass ids through ``extra`` (``log.info("dispatched", extra={"job_id": j, "node_id": n})``);
the formatter lifts the known id fields to the top level. The replica's ``instance_id`` is added to
every record once :func:`setup_logging` knows it.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

from scheduler.config import LoggingConfig

__all__ = ["JsonFormatter", "setup_logging"]

ID_FIELDS = (
    "instance_id",
    "session_id",
    "node_id",
    "job_id",
    "attempt",
    "utterance_index",
    "trace_id",
    "stream",
    "entry_id",
    "delivery_count",
    "remote",
    "reason",
)


class JsonFormatter(logging.Formatter):
    def __init__(self, instance_id: str = "") -> None:
        super().__init__()
        self.instance_id = instance_id

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if self.instance_id:
            entry["instance_id"] = self.instance_id
        for name in ID_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def setup_logging(config: LoggingConfig, instance_id: str = "") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if config.json:
        handler.setFormatter(JsonFormatter(instance_id))
    else:
        prefix = f"[{instance_id}] " if instance_id else ""
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)s {prefix}%(name)s %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.level)
    # websockets logs every failed handshake at INFO; our gateways log what matters.
    logging.getLogger("websockets").setLevel(max(logging.WARNING, root.level))
