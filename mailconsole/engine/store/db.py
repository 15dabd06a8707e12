"""Engines, sessions and schema upgrades for the store.

SQLite (the embedded default) gets WAL, a busy timeout and ``BEGIN IMMEDIATE`` for
writes, so concurrent writers queue on the lock instead of failing on a stale
snapshot; reads use a separate engine with deferred transactions so they never wait
for a writer. PostgreSQL and MySQL use one engine for both.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")
SQLITE_BUSY_TIMEOUT_MS = 30_000
MIGRATION_LOCK_ID = 727_001

# Alembic keeps its migration context in module globals, so two upgrades in one
# process must not interleave even on different connections.
_UPGRADE_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def _upgrade_lock() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    return _UPGRADE_LOCKS.setdefault(loop, asyncio.Lock())


def _sqlite_pragmas(immediate: bool) -> Any:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide where transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit survives power loss, which is what "commit before ack" promises.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return on_connect


def _sqlite_engine(url: str, *, immediate: bool) -> AsyncEngine:
    engine = create_async_engine(url, pool_size=4, max_overflow=4)
    event.listen(engine.sync_engine, "connect", _sqlite_pragmas(immediate))

    def on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    event.listen(engine.sync_engine, "begin", on_begin)
    return engine


class Database:
    """The store's connections. ``write`` sessions for transitions, ``read`` for queries."""

    def __init__(self, url: str) -> None:
        self.url = url
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        if self.dialect == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            self.write_engine = _sqlite_engine(url, immediate=True)
            self.read_engine = _sqlite_engine(url, immediate=False)
        else:
            kwargs: dict[str, Any] = {
                "pool_pre_ping": True,
                "pool_size": 10,
                "max_overflow": 10,
            }
            if self.dialect in ("mysql", "mariadb"):
                kwargs["pool_recycle"] = 3600
                kwargs["isolation_level"] = "READ COMMITTED"
            self.write_engine = create_async_engine(url, **kwargs)
            self.read_engine = self.write_engine
        self.write = async_sessionmaker(self.write_engine, expire_on_commit=False)
        self.read = async_sessionmaker(self.read_engine, expire_on_commit=False)

    @property
    def supports_skip_locked(self) -> bool:
        return self.dialect in ("postgresql", "mysql", "mariadb")

    async def upgrade(self) -> None:
        """Apply every pending migration (Alembic ``upgrade head``).

        Workers starting together must not both create the tables: SQLite serialises
        them with ``BEGIN IMMEDIATE``, PostgreSQL with a transaction-scoped advisory
        lock, MySQL (whose DDL commits by itself) with a named lock.
        """
        async with _upgrade_lock(), self.write_engine.connect() as conn:
            if self.dialect == "postgresql":
                await conn.exec_driver_sql(
                    f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_ID})"
                )
            elif self.dialect in ("mysql", "mariadb"):
                await conn.exec_driver_sql(
                    "SELECT GET_LOCK('mailconsole_migrate', 120)"
                )
            try:
                await conn.run_sync(_upgrade)
                await conn.commit()
            finally:
                if self.dialect in ("mysql", "mariadb"):
                    await conn.exec_driver_sql(
                        "SELECT RELEASE_LOCK('mailconsole_migrate')"
                    )

    async def dispose(self) -> None:
        await self.write_engine.dispose()
        if self.read_engine is not self.write_engine:
            await self.read_engine.dispose()

    def new_session(self) -> AsyncSession:
        return self.write()


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def _upgrade(connection: Connection) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")
