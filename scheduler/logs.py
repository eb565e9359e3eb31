"""Logging: one JSON object per line, ids as fields, so logs can be joined across replicas.

Call sites pass ids through ``extra`` (``log.info("dispatched", extra={"job_id": j, "node_id": n})``);
every ``extra`` field goes out at the top level. Every line carries the replica's
``instance_id`` (the configured one, else the one ``serve`` generated before the first line).
Tracebacks travel as the ``exc`` field of their line: uncaught exceptions (main thread, other
threads, unraisable ones) and warnings are routed through logging too, so nothing reaches
stderr as loose text.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from types import TracebackType
from typing import Any

import orjson

from scheduler.config import LoggingConfig

__all__ = ["JsonFormatter", "is_configured", "setup_logging"]

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_RECORD_FIELDS = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys() | {"message", "asctime"}
)

log = logging.getLogger("lingua.logs")

_configured = False


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
        for name, value in record.__dict__.items():
            if name not in _RECORD_FIELDS and value is not None and name not in entry:
                entry[name] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(entry, default=str).decode()


def _log_uncaught(
    kind: type[BaseException], value: BaseException, tb: TracebackType | None
) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, tb)
        return
    log.critical("uncaught exception", exc_info=(kind, value, tb))


def _log_thread_uncaught(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None or issubclass(args.exc_type, SystemExit):
        return
    log.critical(
        "uncaught exception in thread %s",
        args.thread.name if args.thread else "?",
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )


def _log_unraisable(unraisable: sys.UnraisableHookArgs) -> None:
    exc = unraisable.exc_value
    log.error(
        "%s: %r",
        unraisable.err_msg or "exception ignored",
        unraisable.object,
        exc_info=(unraisable.exc_type, exc, unraisable.exc_traceback) if exc else None,
    )


def setup_logging(config: LoggingConfig, instance_id: str = "") -> None:
    global _configured
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
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_thread_uncaught
    sys.unraisablehook = _log_unraisable
    logging.captureWarnings(True)
    _configured = True


def is_configured() -> bool:
    """Whether :func:`setup_logging` ran in this process (``serve`` reports through logs)."""
    return _configured
