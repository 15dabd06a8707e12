"""The headless worker as a real process (``python -m mailconsole --no-ui``), for the
process tests, the chaos suite and the soak: its environment and its start."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from sqlalchemy import select

from mailconsole.engine.store.db import Database
from mailconsole.engine.store.models import MessageRow

FAST = {
    "SMTP_TIMEOUT": "5",
    "RETRY_BASE_DELAY": "0.05",
    "RETRY_MAX_DELAY": "0.2",
    "HEARTBEAT_INTERVAL": "0.3",
    "SCHEDULER_INTERVAL": "0.05",
    "REQUEUE_STALE_AFTER": "5",
    "CONCURRENCY": "8",
}
"""Retries, heartbeats and sweeps in fractions of a second (``MAILCONSOLE_`` names)."""


def worker_env(
    amqp_url: str,
    queue: str,
    db_url: str,
    port: int,
    settings: Mapping[str, str] = FAST,
) -> dict[str, str]:
    """This process's environment without any ``MAILCONSOLE_*`` of its own, plus the
    worker's: the broker, queue, store, the relay on 127.0.0.1:``port`` and
    ``settings`` (names without the ``MAILCONSOLE_`` prefix)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILCONSOLE_")}
    own = {
        "AMQP_URL": amqp_url,
        "QUEUE": queue,
        "DATABASE_URL": db_url,
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(port),
        "CONFIG": "/dev/null",
        "LOG_LEVEL": "WARNING",
        **settings,
    }
    env.update({f"MAILCONSOLE_{k}": v for k, v in own.items()})
    return env


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "mailconsole", "--no-ui"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("ab"),
    )


async def rows(db: Database) -> list[MessageRow]:
    async with db.read() as session:
        return list((await session.execute(select(MessageRow))).scalars())
