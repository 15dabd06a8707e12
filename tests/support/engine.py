"""Running a real engine in a test: settings for fast retries, start/stop, waiting.

Fixtures here use the real RabbitMQ (a queue of the test's own), SQLite in
``tmp_path`` and an SMTP server the test starts; nothing is mocked.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aio_pika
import pytest
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

from mailconsole.config import Settings
from mailconsole.engine.store.db import Database
from mailconsole.engine.store.models import MessageRow

if TYPE_CHECKING:
    from mailconsole.engine.runtime import Engine


def fast_settings(*, queue: str, smtp_port: int, **over: Any) -> Settings:
    """Settings whose retries, heartbeats and sweeps run in fractions of a second."""
    values: dict[str, Any] = {
        "queue": queue,
        "smtp": {"host": "127.0.0.1", "port": smtp_port, "timeout": 5, "pool_size": 4},
        "retry": {
            "max_attempts": 5,
            "base_delay": 0.05,
            "max_delay": 0.2,
            "max_age": 60,
        },
        "concurrency": 8,
        "scheduler_interval": 0.05,
        "heartbeat_interval": 0.5,
        "requeue_stale_after": 5,
        "shutdown_grace": 5,
        "reconnect_interval": 0.2,
    }
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            values[key] = {**values[key], **value}
        else:
            values[key] = value
    return Settings.model_validate(values)


async def publish_raw(
    amqp_url: str,
    queue: str,
    bodies: list[bytes],
    *,
    persistent: bool = False,
    message_id: str | None = None,
) -> None:
    """Publish as a plain producer would (the .NET ones send no properties at all)."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(queue, durable=True)
        for body in bodies:
            mode = aio_pika.DeliveryMode.PERSISTENT if persistent else None
            await channel.default_exchange.publish(
                aio_pika.Message(body, delivery_mode=mode, message_id=message_id),
                routing_key=queue,
            )


def dotnet_job(n: int, recipient: str = "user@example.com") -> bytes:
    return json.dumps(
        {
            "SenderName": "Shop",
            "SenderEmail": "shop@example.com",
            "RecipientName": f"User {n}",
            "RecipientEmail": recipient,
            "Subject": f"Order {n}",
            "Content": f"Your order {n} has shipped.",
        }
    ).encode()


async def statuses(db: Database) -> dict[str, str]:
    """Status of every stored message ({} while a worker has not created the schema)."""
    try:
        async with db.read() as session:
            rows = await session.execute(select(MessageRow.id, MessageRow.status))
            return {i: s for i, s in rows}
    except DBAPIError as exc:
        if "messages" in str(exc):
            return {}
        raise


async def wait_until(
    check: Callable[[], Awaitable[bool]], timeout: float = 20.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


async def wait_for_statuses(
    db: Database, expected: dict[str, int], timeout: float = 20.0
) -> dict[str, str]:
    """Wait until the store holds exactly these counts per status."""
    seen: dict[str, str] = {}

    async def check() -> bool:
        nonlocal seen
        seen = await statuses(db)
        counts: dict[str, int] = {}
        for status in seen.values():
            counts[status] = counts.get(status, 0) + 1
        return counts == expected

    try:
        await wait_until(check, timeout, f"statuses {expected}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; store has {sorted(seen.values())}") from None
    return seen


@pytest.fixture
def engine_factory(
    amqp_url: str, queue_name: str, tmp_path: Path
) -> Callable[..., Settings]:
    """Settings for an engine on this test's queue and a SQLite store in tmp_path."""

    def make(smtp_port: int, **over: Any) -> Settings:
        over.setdefault("database_url", f"sqlite+aiosqlite:///{tmp_path}/store.db")
        over.setdefault("amqp_url", amqp_url)
        return fast_settings(queue=queue_name, smtp_port=smtp_port, **over)

    return make


@pytest.fixture
async def running() -> AsyncIterator[Callable[[Settings], Awaitable[Engine]]]:
    """Start engines for a test; every one is stopped at teardown."""
    engines: list[Engine] = []

    from mailconsole.engine.runtime import Engine

    async def start(settings: Settings) -> Engine:
        engine = Engine(settings)
        await engine.start()
        engines.append(engine)
        return engine

    yield start
    for engine in reversed(engines):
        await engine.stop()
