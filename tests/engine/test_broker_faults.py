"""RabbitMQ connection faults under a running engine, through a TCP proxy we cut."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit

import pytest

from mailconsole.config import Settings
from mailconsole.engine.runtime import Engine
from tests.support.engine import dotnet_job, publish_raw, wait_for_statuses, wait_until
from tests.support.smtp_server import Fault, FaultySMTPServer
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.rabbitmq


@pytest.fixture
async def proxy(amqp_url: str) -> AsyncIterator[TcpProxy]:
    parts = urlsplit(amqp_url)
    p = await TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5672).start()
    yield p
    await p.stop()


def via(proxy: TcpProxy, amqp_url: str) -> str:
    parts = urlsplit(amqp_url)
    return amqp_url.replace(f"{parts.hostname}:{parts.port}", f"127.0.0.1:{proxy.port}")


async def test_connection_cut_while_consuming_recovers_without_loss_or_double_send(
    amqp_url: str,
    queue_name: str,
    proxy: TcpProxy,
    make_smtp_server: Callable[..., FaultySMTPServer],
    engine_factory: Callable[..., Settings],
    running: Callable[[Settings], Awaitable[Engine]],
) -> None:
    total = 120
    server = make_smtp_server(faults=[Fault("data", stall=0.01)])
    # A small prefetch so most deliveries are still on the broker when we cut.
    settings = engine_factory(server.port, amqp_url=via(proxy, amqp_url), prefetch=10)
    engine = await running(settings)
    await publish_raw(
        amqp_url,
        queue_name,
        [dotnet_job(n, f"u{n}@example.com") for n in range(total)],
        persistent=True,
    )

    async def some_sent() -> bool:
        return len(server.received) >= 20

    await wait_until(some_sent, what="first deliveries")
    proxy.cut()
    await asyncio.sleep(0.5)
    proxy.cut()  # a second drop while reconnecting
    await wait_for_statuses(engine.db, {"sent": total}, timeout=60)
    assert sorted(server.count_by_message_id().values()) == [1] * total
    assert proxy.connections >= 2, "the engine never reconnected"


async def test_broker_unreachable_at_start_is_a_clear_error(
    queue_name: str, engine_factory: Callable[..., Settings]
) -> None:
    from mailconsole.engine.errors import BrokerUnavailable

    settings = engine_factory(25, amqp_url="amqp://guest:guest@127.0.0.1:1/")
    engine = Engine(settings)
    with pytest.raises(BrokerUnavailable) as err:
        await engine.start()
    await engine.stop()
    assert "rabbitmq-server -detached" in str(err.value)
    assert "guest:guest" not in str(err.value)
