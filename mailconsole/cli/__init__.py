"""The ``mailconsole`` command: the console by default, ``--no-ui`` for a worker, and
subcommands for every operator action. Commands call the engine's APIs only."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import ModuleType

from mailconsole.cli import actions, console, messages, send, suppress, system, transfer
from mailconsole.cli.common import (
    EXIT_USAGE,
    add_setting_flags,
    add_setting_flags_to_subcommands,
    fail,
    run,
    settings_from,
)
from mailconsole.config import ConfigError
from mailconsole.logsetup import configure


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mailconsole",
        description="Deliver application mail from RabbitMQ over SMTP, and operate it.",
    )
    parser.add_argument(
        "--no-ui", action="store_true", help="run the engine as a headless worker"
    )
    parser.add_argument(
        "--no-engine",
        action="store_true",
        help="console: only observe the shared store and broker (no sending here)",
    )
    console.add_console_flags(parser)
    add_setting_flags(parser)
    sub = parser.add_subparsers(dest="subcommand", metavar="COMMAND")
    for module in _command_modules():
        module.register(sub)
    add_setting_flags_to_subcommands(parser)
    return parser


def _command_modules() -> list[ModuleType]:
    return [send, system, console, messages, actions, suppress, transfer]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from(args)
    except ConfigError as exc:
        return fail(str(exc), EXIT_USAGE)
    command = getattr(args, "command", None)
    configure(settings, quiet=command is not None)
    if command is not None:
        return run(command(args, settings))
    if args.no_ui:
        from mailconsole.cli.worker import run_worker

        return run(run_worker(settings))
    return run(console.run_console(args, settings))


if __name__ == "__main__":
    sys.exit(main())
