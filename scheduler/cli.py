"""``lingua-scheduler``: one entry point, subcommands registered by the modules that own them.

Parsing lives here; each command is a function ``(args, config) -> int`` (exit code) in its own
module, so tests call :func:`main` with an argv and read stdout. Read commands take ``--json``.
Exit codes (:class:`scheduler.cli_errors.ExitCode`): 0 ok, 1 the command ran and found a
problem, 2 bad usage, 3 Redis cannot be reached or the configuration is invalid. Failures are
one line on stderr; ``serve`` reports them as one JSON log line.

Commands that read Redis and have no ``redis.url`` use the embedded Redis of a running
``serve`` (``make run``), found through its run file (:mod:`scheduler.run_file`).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any, NoReturn

import msgspec

from cross_instance.config import RedisConfig
from cross_instance.ids import default_instance_id
from scheduler import run_file
from scheduler.cli_errors import CliError, ExitCode, check_redis_url, describe, redact
from scheduler.config import Config, LoggingConfig, load_config
from scheduler.logs import is_configured, setup_logging

__all__ = ["build_parser", "main"]

Command = Callable[[argparse.Namespace, Config], int]

PROG = "lingua-scheduler"

# Modules that add subcommands through ``register(subparsers)``.
COMMAND_MODULES = (
    "scheduler.cli_core",
    "scheduler.cli_ops",
    "scheduler.cli_audit",
    "scheduler.serve",
)

log = logging.getLogger("lingua.cli")


class Parser(argparse.ArgumentParser):
    """Usage errors in one line (with where to look), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(ExitCode.USAGE, f"{self.prog}: {message} (see '{self.prog} --help')\n")


def _package_version() -> str:
    try:
        return version("lingua-scheduler")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _shown(config: Config) -> dict[str, Any]:
    """The effective config as printed: secrets masked (a password in redis.url included)."""
    data: dict[str, Any] = msgspec.to_builtins(config)
    redis = data["redis"]
    if redis.get("password"):
        redis["password"] = "***"
    redis["url"] = redact(redis["url"])
    for secret in ("admin_token", "ops_read_token"):
        if data["server"][secret]:  # say that it is set, never what it is
            data["server"][secret] = "(set, hidden)"
    auth = data["auth"]
    for key in ("node_secrets", "node_token_keys", "session_token_keys"):
        auth[key] = [f"(set, hidden: {len(auth[key])})"] if auth[key] else []
    return data


def _config_show(args: argparse.Namespace, config: Config) -> int:
    data = _shown(config)
    if args.json:
        sys.stdout.write(msgspec.json.encode(data).decode() + "\n")
        return 0
    for section, values in data.items():
        sys.stdout.write(f"[{section}]\n")
        for key, value in values.items():
            sys.stdout.write(f"{key} = {msgspec.json.encode(value).decode()}\n")
        sys.stdout.write("\n")
    return 0


def _config_doc(args: argparse.Namespace, config: Config) -> int:
    from scheduler.config_doc import render

    sys.stdout.write(render())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=PROG,
        description="Central scheduler of the speech-translation platform. Exit codes: 0 ok, "
        "1 a problem was found, 2 bad usage, 3 Redis unreachable or invalid configuration.",
    )
    parser.add_argument("--config", help="TOML config file (default: $LINGUA_CONFIG)")
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {_package_version()}",
        help="print the version and exit",
    )  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    config_cmd = sub.add_parser("config", help="show the effective config or its reference")
    config_sub = config_cmd.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    show = config_sub.add_parser("show", help="print the effective config (defaults, file, env)")
    show.add_argument("--json", action="store_true", help="one JSON document")
    show.set_defaults(func=_config_show)
    doc = config_sub.add_parser("doc", help="print docs/configuration.md")
    doc.set_defaults(func=_config_doc)

    for name in COMMAND_MODULES:
        try:
            module: Any = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(sub)
    return parser


def _with_discovered_redis(config: Config) -> tuple[Config, str]:
    """``config`` pointed at the embedded Redis of a running ``serve``, and where it was found."""
    found = run_file.find_live()
    if found is None:
        raise CliError(
            f"no Redis configured and no running 'make run' found ({run_file.searched()}): "
            "start 'make run' (and run this from the same directory), or set LINGUA_REDIS_URL",
            ExitCode.UNAVAILABLE,
        )
    info, path = found
    # The run file describes what serve writes; a key_prefix set here on purpose still wins.
    prefix = config.redis.key_prefix
    if prefix == RedisConfig().key_prefix:
        prefix = info.key_prefix
    redis = msgspec.structs.replace(config.redis, url=info.url, key_prefix=prefix)
    return msgspec.structs.replace(config, redis=redis), f"{info.url} (from {path})"


def _ensure_logging() -> None:
    # serve failed before its own setup (bad config): default JSON logs, still with an id.
    if not is_configured():
        setup_logging(LoggingConfig(), default_instance_id())


def _report(failure: CliError, as_log: bool) -> None:
    if as_log:
        _ensure_logging()
        log.error("%s", failure, extra={"exit_code": int(failure.code)})
    else:
        sys.stderr.write(f"{PROG}: {failure}\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        getattr(args, "check", lambda a: None)(args)  # checks across options, still usage
    except SystemExit as exc:  # --help, --version, or a usage error (already printed)
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        return int(ExitCode.USAGE)
    is_serve = args.command == "serve"
    where = "the embedded redis-server" if is_serve else "redis.url"
    try:
        overrides = getattr(args, "config_overrides", lambda a: None)(args)
        config = load_config(args.config, overrides=overrides)
        if config.redis.url:
            check_redis_url(config.redis.url)
            where = f"{redact(config.redis.url)} (redis.url)"
        elif config.redis.mode == "sentinel":  # the Sentinels name the master: nothing embedded
            where = (
                f"the master {config.redis.sentinel_master!r} of the Sentinels "
                f"{', '.join(config.redis.sentinels)} (redis.sentinels)"
            )
        elif getattr(args, "needs_redis", False):
            config, where = _with_discovered_redis(config)
        func: Command = args.func
        return func(args, config)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (``| head``): not an error; stop Python complaining at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return int(ExitCode.OK)
    except Exception as exc:
        failure = describe(exc, where)
        if failure is None:
            if not is_serve:
                raise  # a bug: the traceback is what a report needs
            _ensure_logging()
            log.critical("serve stopped on an unexpected error", exc_info=True)
            return int(ExitCode.PROBLEM)
        _report(failure, as_log=is_serve)
        return int(failure.code)


if __name__ == "__main__":
    raise SystemExit(main())
