"""RabbitMQ going away under the engine and under a producer, with the ledger.

tests/engine/test_broker_faults.py covers a connection cut while consuming (through
the TCP proxy) and a broker unreachable at start. Here: cuts while the engine itself
publishes (its retries go back on the queue by reference), cuts under a producer that
republishes what was not confirmed, and (``-m chaos``) a real broker restart with
``rabbitmqctl stop_app``/``start_app`` while both consume and publish.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator, Callable

import pytest

from mailconsole.engine.broker import Broker
from mailconsole.engine.errors import PublishFailed
from tests.chaos.conftest import Make, Scenario, Start, patient, via
from tests.chaos.ledger import encode, job
from tests.support.smtp_server import Fault, FaultySMTPServer
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.rabbitmq
MakeServer = Callable[..., FaultySMTPServer]


async def produce(
    url: str, queue: str, bodies: list[bytes], *, pace: float = 0.0
) -> int:
    """A careful producer: every publish confirmed; an unconfirmed one is published
    again (the same job id, so the engine deduplicates). Returns the retries."""
    broker = Broker(url, queue, publish_timeout=2.0, reconnect_interval=0.2)
    retries = 0
    await broker.connect()
    try:
        for body in bodies:
            while True:
                try:
                    await broker.publish(body)
                    break
                except PublishFailed:
                    retries += 1
                    await asyncio.sleep(0.2)
            if pace:
                await asyncio.sleep(pace)
    finally:
        await broker.close()
    return retries


async def test_cut_while_the_engine_publishes_its_retries(
    scenario: Scenario,
    amqp_url: str,
    proxy: TcpProxy,
    make_smtp_server: MakeServer,
    engine_factory: Make,
    running: Start,
) -> None:
    server = make_smtp_server(faults=[Fault("data", reply="451 4.3.0 later", times=80)])
    settings = engine_factory(
        server.port, amqp_url=via(proxy, amqp_url), publish_timeout=2.0, **patient()
    )
    engine = await running(settings)
    await scenario.publish(80)
    await server.wait_for_event("data")
    for _ in range(4):  # retries are being published by reference right now
        await asyncio.sleep(0.3)
        proxy.cut()
    ledger = await scenario.ledger(
        server, engine.db, connections=lambda: proxy.connections
    )
    ledger.check()
    assert ledger.delivered == 80 and proxy.connections >= 3


async def test_cut_under_a_producer_that_republishes_unconfirmed_jobs(
    scenario: Scenario,
    amqp_url: str,
    queue_name: str,
    proxy: TcpProxy,
    make_smtp_server: MakeServer,
    engine_factory: Make,
    running: Start,
) -> None:
    server = make_smtp_server()
    engine = await running(engine_factory(server.port))
    jobs = [job(f"{scenario.name}-{i}", to=f"u{i}@example.com") for i in range(150)]
    scenario.keys = [j["id"] for j in jobs]
    producer = asyncio.create_task(
        produce(via(proxy, amqp_url), queue_name, encode(jobs), pace=0.005)
    )
    for _ in range(3):
        await asyncio.sleep(0.25)
        proxy.cut()
    retries = await asyncio.wait_for(producer, 60)
    ledger = await scenario.ledger(server, engine.db, producer_retries=retries)
    ledger.check()
    assert ledger.delivered == 150


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)


@contextlib.asynccontextmanager
async def broker_down() -> AsyncIterator[None]:
    """Stop the RabbitMQ application; always start it again (others use it)."""
    await asyncio.to_thread(rabbitmqctl, "stop_app")
    try:
        yield
    finally:
        await asyncio.to_thread(rabbitmqctl, "start_app")
        await asyncio.to_thread(rabbitmqctl, "await_startup")


@pytest.mark.chaos
async def test_broker_restart_while_consuming_and_publishing(
    scenario: Scenario,
    amqp_url: str,
    queue_name: str,
    make_smtp_server: MakeServer,
    engine_factory: Make,
    running: Start,
) -> None:
    server = make_smtp_server(
        faults=[
            Fault("data", stall=0.01),
            Fault("data", reply="451 4.3.0 later", fraction=0.1),
        ]
    )
    engine = await running(
        engine_factory(server.port, publish_timeout=2.0, **patient())
    )
    await scenario.publish(100)  # a backlog being consumed at the restart
    jobs = [job(f"{scenario.name}-p{i}", to=f"p{i}@example.com") for i in range(300)]
    scenario.keys += [j["id"] for j in jobs]
    producer = asyncio.create_task(
        produce(amqp_url, queue_name, encode(jobs), pace=0.01)
    )
    await server.wait_for(60, timeout=30)
    async with broker_down():
        await asyncio.sleep(3)
    retries = await asyncio.wait_for(producer, 120)
    ledger = await scenario.ledger(
        server, engine.db, timeout=120, producer_retries=retries
    )
    ledger.check()
    assert ledger.delivered == 400
