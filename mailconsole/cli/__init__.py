"""The ``mailconsole`` command: the console by default, ``--no-ui`` for a worker, and
subcommands for every operator action. Commands call the engine's APIs only."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mailconsole.cli import send, system
from mailconsole.cli.common import (
    EXIT_USAGE,
    add_setting_flags,
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
    parser.add_argument("--no-ui", action="store_true", help="run the engine as a headless worker")
    add_setting_flags(parser)
    sub = parser.add_subparsers(dest="subcommand", metavar="COMMAND")
    for module in _command_modules():
        module.register(sub)
    return parser


def _command_modules() -> list[object]:
    return [send, system]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from(args)
    except ConfigError as exc:
        return fail(str(exc), EXIT_USAGE)
    configure(settings)
    command = getattr(args, "command", None)
    if command is not None:
        return run(command(args, settings))
    if args.no_ui:
        from mailconsole.cli.worker import run_worker

        return run(run_worker(settings))
    return fail("the console is not available in this build; use --no-ui", EXIT_USAGE)


if __name__ == "__main__":
    sys.exit(main())
