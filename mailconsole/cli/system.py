"""``mailconsole config`` and ``mailconsole db upgrade``."""

from __future__ import annotations

import argparse
import json

from mailconsole.cli.common import EXIT_OK
from mailconsole.config import Settings
from mailconsole.engine.store.db import Database


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("config", help="print the effective settings, secrets masked")
    p.add_argument("--json", action="store_true")
    p.set_defaults(command=show_config)
    db = sub.add_parser("db", help="store maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    up = db_sub.add_parser("upgrade", help="apply pending schema migrations")
    up.set_defaults(command=upgrade)


def _flatten(data: dict[str, object], prefix: str = "") -> list[tuple[str, object]]:
    rows: list[tuple[str, object]] = []
    for key, value in data.items():
        if isinstance(value, dict):
            rows += _flatten(value, f"{prefix}{key}.")
        else:
            rows.append((f"{prefix}{key}", value))
    return rows


async def show_config(args: argparse.Namespace, settings: Settings) -> int:
    masked = settings.masked()
    if args.json:
        print(json.dumps(masked, indent=2))
    else:
        for key, value in _flatten(masked):
            print(f"{key} = {json.dumps(value)}")
    return EXIT_OK


async def upgrade(args: argparse.Namespace, settings: Settings) -> int:
    db = Database(settings.database_url.get_secret_value())
    try:
        await db.upgrade()
    finally:
        await db.dispose()
    print("store is at the latest schema")
    return EXIT_OK
