"""Fixtures for the real services the tests talk to: RabbitMQ, PostgreSQL, MariaDB.

A service that does not answer skips its tests locally, but fails them when ``CI`` or
``MAILCONSOLE_TEST_REQUIRE_SERVICES`` is set: a green CI must mean the tests really ran.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import aio_pika
import pytest

AMQP_URL = os.environ.get(
    "MAILCONSOLE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"
)
POSTGRES_URL = os.environ.get(
    "MAILCONSOLE_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
MYSQL_URL = os.environ.get(
    "MAILCONSOLE_TEST_MYSQL_URL", "mysql+asyncmy://root@127.0.0.1:3306/test"
)


def services_required() -> bool:
    return bool(
        os.environ.get("CI") or os.environ.get("MAILCONSOLE_TEST_REQUIRE_SERVICES")
    )


def require_service(name: str, url: str) -> None:
    """Skip (locally) or fail (in CI) when nothing listens at the URL's host and port."""
    parts = urlsplit(url.replace("+asyncpg", "").replace("+asyncmy", ""))
    host, port = parts.hostname or "127.0.0.1", parts.port
    try:
        with socket.create_connection((host, port or 0), timeout=2):
            return
    except OSError as exc:
        message = f"{name} is not reachable at {host}:{port} ({exc})"
        if services_required():
            pytest.fail(message + " and CI requires it", pytrace=False)
        pytest.skip(message)


@pytest.fixture
def amqp_url() -> str:
    require_service("RabbitMQ", AMQP_URL)
    return AMQP_URL


@pytest.fixture
async def queue_name(amqp_url: str) -> AsyncIterator[str]:
    """A fresh queue name for one test; the queue is deleted afterwards."""
    name = f"mail-test-{uuid.uuid4().hex[:10]}"
    yield name
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(name)


@pytest.fixture
def management_url(amqp_url: str) -> str:
    """RabbitMQ's management API beside the test broker (``.ci/run`` enables it)."""
    from mailconsole.engine.broker_stats import management_url_for

    url = management_url_for(AMQP_URL)
    require_service("RabbitMQ management (rabbitmq-plugins enable ...)", url)
    return url


@pytest.fixture
def postgres_url() -> str:
    require_service("PostgreSQL", POSTGRES_URL)
    return POSTGRES_URL


@pytest.fixture
def mysql_url() -> str:
    require_service("MariaDB", MYSQL_URL)
    return MYSQL_URL


async def _create_database(url: str) -> tuple[str, str]:
    """A fresh database on the server of ``url``; returns (its url, its name)."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url
    from sqlalchemy.ext.asyncio import create_async_engine

    name = f"mc_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f"CREATE DATABASE {name}"))
    await admin.dispose()
    return make_url(url).set(database=name).render_as_string(hide_password=False), name


async def _drop_database(url: str, name: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    admin = create_async_engine(url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        if admin.dialect.name == "postgresql":
            await conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        else:
            await conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
    await admin.dispose()


@pytest.fixture(params=["sqlite", "postgres", "mysql"])
async def store_url(
    request: pytest.FixtureRequest, tmp_path: object
) -> AsyncIterator[str]:
    """The same test on each store backend, each with a database of its own."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/store.db"
        return
    server = POSTGRES_URL if request.param == "postgres" else MYSQL_URL
    require_service("PostgreSQL" if request.param == "postgres" else "MariaDB", server)
    url, name = await _create_database(server)
    yield url
    await _drop_database(server, name)
