"""The unacknowledged count from RabbitMQ's management API, through ``ops.stats()``."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import pytest

from mailconsole.config import Settings
from mailconsole.engine import broker_stats
from mailconsole.engine.ops import Ops, management_url
from tests.support.engine import fast_settings, wait_until


@pytest.mark.parametrize(
    ("amqp", "management"),
    [
        ("amqp://guest:guest@localhost:5672/", "http://guest:guest@localhost:15672/"),
        (
            "amqps://u:p%40ss@mq.internal:5671/prod",
            "https://u:p%40ss@mq.internal:15672/prod",
        ),
        ("amqp://mq", "http://mq:15672/"),
        ("amqp://u:p@[::1]:5672/%2F", "http://u:p@[::1]:15672/%2F"),
    ],
)
def test_the_management_api_sits_beside_the_amqp_url(
    amqp: str, management: str
) -> None:
    assert broker_stats.management_url_for(amqp) == management


@pytest.mark.parametrize(
    ("management", "endpoint"),
    [
        (
            "http://guest:guest@localhost:15672/",
            "http://localhost:15672/api/queues/%2F/mail",
        ),
        ("http://u:p@h:15672/%2F", "http://h:15672/api/queues/%2F/mail"),
        ("https://u:p@h:15672/prod", "https://h:15672/api/queues/prod/mail"),
    ],
)
def test_the_queue_endpoint_encodes_the_vhost(management: str, endpoint: str) -> None:
    url, auth = broker_stats._queue_endpoint(management, "mail")
    assert url == endpoint and auth.startswith("Basic ")


async def test_nothing_listening_is_unknown_not_an_error() -> None:
    assert await broker_stats.unacked("http://u:p@127.0.0.1:1/", "mail") is None


@pytest.fixture
async def ops(
    tmp_path: Path, amqp_url: str, queue_name: str, management_url: str
) -> AsyncIterator[Ops]:
    settings = fast_settings(
        queue=queue_name,
        smtp_port=1,
        database_url=f"sqlite+aiosqlite:///{tmp_path}/store.db",
        amqp_url=amqp_url,
    )
    opened = await Ops.open(settings)
    yield opened
    await opened.close()


@pytest.mark.rabbitmq
@pytest.mark.timeout(60)
async def test_stats_count_what_a_consumer_holds_unacknowledged(
    ops: Ops, amqp_url: str, queue_name: str
) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=3)
        queue = await channel.declare_queue(queue_name, durable=True)
        for n in range(5):
            await channel.default_exchange.publish(
                aio_pika.Message(f"job {n}".encode()), routing_key=queue_name
            )
        held: list[aio_pika.abc.AbstractIncomingMessage] = []

        async def hold(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            held.append(message)  # never acked while the test looks

        await queue.consume(hold)

        async def counted() -> bool:
            stats = await ops.stats()
            return (stats.queue_ready, stats.queue_unacked, stats.consumers) == (
                2,
                3,
                1,
            )

        # RabbitMQ samples queue statistics every 5 s by default.
        await wait_until(counted, 30, "ready 2, unacked 3, one consumer")


@pytest.mark.parametrize(
    ("configured", "asked"),
    [
        (None, "http://app:pw@mq:15672/"),
        ("off", None),
        ("", None),
        ("https://admin:x@mgmt.internal/", "https://admin:x@mgmt.internal/"),
    ],
)
def test_the_setting_derives_names_or_turns_off_the_api(
    configured: str | None, asked: str | None
) -> None:
    settings = Settings.model_validate(
        {"amqp_url": "amqp://app:pw@mq:5672/", "amqp_management_url": configured}
    )
    assert management_url(settings) == asked


async def test_the_count_is_asked_once_per_sample_interval() -> None:
    """A stand-in management API on loopback counts the questions."""
    asked: list[str] = []

    class Api(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            body = json.dumps({"messages_unacknowledged": 7}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Api)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        count = broker_stats.UnackedCount(
            f"http://u:p@127.0.0.1:{server.server_address[1]}/", "mail"
        )
        assert [await count.get() for _ in range(5)] == [7] * 5
        assert asked == ["/api/queues/%2F/mail"]
    finally:
        server.shutdown()
        server.server_close()
