"""What every CLI command shares: settings from flags, exit codes, one-line errors."""

from __future__ import annotations

import argparse
import asyncio
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


def add_setting_flags(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("settings (override MAILCONSOLE_* and the config file)")
    g.add_argument("--config", type=Path, help="TOML settings file")
    g.add_argument("--amqp-url", help="RabbitMQ URL")
    g.add_argument("--queue", help="queue name (default: mail)")
    g.add_argument("--database-url", help="SQLAlchemy URL of the store")
    g.add_argument("--smtp-host")
    g.add_argument("--smtp-port", type=int)
    g.add_argument("--smtp-tls", choices=["none", "starttls", "tls"])
    g.add_argument("--concurrency", type=int)
    g.add_argument("--templates-dir", type=Path)
    g.add_argument("--log-format", choices=["text", "json"])
    g.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


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
        return asyncio.run(coro)
    except ConfigError as exc:
        return fail(str(exc), EXIT_USAGE)
    except MailconsoleError as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        return fail("interrupted", 130)
