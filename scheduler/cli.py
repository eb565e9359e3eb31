"""``lingua-scheduler``: one entry point, subcommands registered by the modules that own them.

Parsing lives here; each command is a function ``(args, config) -> int`` (exit code) in its own
module, so tests call :func:`main` with an argv and read stdout. Read commands take ``--json``.
Exit codes: 0 ok, 1 the command ran and found a problem, 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from scheduler.config import Config, ConfigError, load_config

__all__ = ["main"]

Command = Callable[[argparse.Namespace, Config], int]

# Modules that add subcommands through ``register(subparsers)``.
COMMAND_MODULES = (
    "scheduler.cli_core",
    "scheduler.cli_ops",
    "scheduler.serve",
)


def _config_show(args: argparse.Namespace, config: Config) -> int:
    if args.json:
        sys.stdout.write(msgspec.json.encode(config).decode() + "\n")
        return 0
    data = msgspec.to_builtins(config)
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
    parser = argparse.ArgumentParser(
        prog="lingua-scheduler", description="Central scheduler of the speech-translation platform."
    )
    parser.add_argument("--config", help="TOML config file (default: $LINGUA_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    config_cmd = sub.add_parser("config", help="show the effective config or its reference")
    config_sub = config_cmd.add_subparsers(dest="config_command", required=True)
    show = config_sub.add_parser("show", help="print the effective config (defaults, file, env)")
    show.add_argument("--json", action="store_true")
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = load_config(
            args.config, overrides=getattr(args, "config_overrides", lambda a: None)(args)
        )
    except ConfigError as exc:
        sys.stderr.write(f"lingua-scheduler: configuration error: {exc}\n")
        return 2
    func: Command = args.func
    try:
        return func(args, config)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
