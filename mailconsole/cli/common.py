"""What every CLI command shares: settings from flags, exit codes, one-line errors."""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from mailconsole.config import ConfigError, Settings, load_settings
from mailconsole.engine.errors import MailconsoleError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

# flag -> (settings path); flags are the highest layer of the settings.
SETTING_FLAGS: dict[str, tuple[str, ...]] = {
    "amqp_url": ("amqp_url",),
    "queue": ("queue",),
    "database_url": ("database_url",),
    "smtp_host": ("smtp", "host"),
    "smtp_port": ("smtp", "port"),
    "smtp_tls": ("smtp", "tls"),
    "concurrency": ("concurrency",),
    "templates_dir": ("templates_dir",),
    "log_format": ("log_format",),
    "log_level": ("log_level",),
}


def add_setting_flags(
    parser: argparse.ArgumentParser, *, suppress: bool = False
) -> None:
    """The settings flags. With ``suppress`` an unset flag leaves no attribute, so a
    subcommand's copy never overwrites the same flag given before the subcommand."""
    g = parser.add_argument_group(
        "settings (override MAILCONSOLE_* and the config file)"
    )
    kw: dict[str, Any] = {"default": argparse.SUPPRESS} if suppress else {}
    g.add_argument("--config", type=Path, help="TOML settings file", **kw)
    g.add_argument("--amqp-url", help="RabbitMQ URL", **kw)
    g.add_argument("--queue", help="queue name (default: mail)", **kw)
    g.add_argument("--database-url", help="SQLAlchemy URL of the store", **kw)
    g.add_argument("--smtp-host", **kw)
    g.add_argument("--smtp-port", type=int, **kw)
    g.add_argument("--smtp-tls", choices=["none", "starttls", "tls"], **kw)
    g.add_argument("--concurrency", type=int, **kw)
    g.add_argument("--templates-dir", type=Path, **kw)
    g.add_argument("--log-format", choices=["text", "json"], **kw)
    g.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], **kw)


def add_setting_flags_to_subcommands(parser: argparse.ArgumentParser) -> None:
    """Accept the settings flags after the subcommand too (``mailconsole db upgrade
    --database-url ...``), at every level of nesting."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                add_setting_flags(child, suppress=True)
                add_setting_flags_to_subcommands(child)


def settings_from(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    for flag, path in SETTING_FLAGS.items():
        value = getattr(args, flag, None)
        if value is None:
            continue
        target = overrides
        for part in path[:-1]:
            target = target.setdefault(part, {})
        target[path[-1]] = value
    return load_settings(overrides, config_file=getattr(args, "config", None))


def fail(message: str, code: int = EXIT_FAILED) -> int:
    print(f"mailconsole: {message}", file=sys.stderr)
    return code


def run(coro: Coroutine[Any, Any, int]) -> int:
    """Run a command's coroutine; operator-facing errors become one line and exit 1."""
    try:
        code = asyncio.run(coro)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except ConfigError as exc:
        return fail(str(exc), EXIT_USAGE)
    except MailconsoleError as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        return fail("interrupted", 130)
    except BrokenPipeError:
        # `mailconsole list --json | head`: the reader left, which is not an error.
        # Point stdout at /dev/null so the interpreter's final flush stays quiet.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


def freeze_startup_objects() -> None:
    """Put what start-up allocated (modules, mappers, the engine, its pools) out of
    the garbage collector's sight, once the long-running process is up.

    A full collection scans every tracked object: in the console sending 20,000
    messages at full speed there were a dozen, the longest 206 ms, with the keyboard
    frozen meanwhile; with start-up frozen the longest was 116 ms
    (``bench/console_load.py --no-freeze`` compares).
    """
    gc.collect()
    gc.freeze()
