"""Schema upgrades: idempotent, and safe when several workers start at once."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from sqlalchemy import inspect

from mailconsole.engine.store.db import Database


async def _tables(db: Database) -> set[str]:
    async with db.read_engine.connect() as conn:
        return await conn.run_sync(lambda c: set(inspect(c).get_table_names()))


async def test_workers_starting_together_all_upgrade_cleanly(store_url: str) -> None:
    """Three processes run ``db upgrade`` at once: each exits 0, the schema is whole."""
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mailconsole",
            "db",
            "upgrade",
            "--database-url",
            store_url,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(3)
    ]
    results = [await p.communicate() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err for _, err in results]
    db = Database(store_url)
    try:
        await db.upgrade()  # and again: nothing left to do, no error
        tables = await _tables(db)
        assert {"messages", "attempts", "audit", "workers", "suppressions"} <= tables
    finally:
        await db.dispose()


async def test_upgrades_in_one_process_do_not_interleave(tmp_path: Path) -> None:
    databases = [Database(f"sqlite+aiosqlite:///{tmp_path}/{n}.db") for n in range(3)]
    try:
        await asyncio.gather(*(db.upgrade() for db in databases))
        for db in databases:
            assert "messages" in await _tables(db)
    finally:
        for db in databases:
            await db.dispose()


async def test_sqlite_runs_in_wal_mode_with_full_sync(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/s.db")
    try:
        await db.upgrade()
        async with db.read_engine.connect() as conn:
            mode = (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar()
            sync = (await conn.exec_driver_sql("PRAGMA synchronous")).scalar()
        assert (mode, sync) == ("wal", 2)
    finally:
        await db.dispose()
