"""Relay faults under a running engine, one scenario per row, each with its ledger.

Unit-level behaviour of the SMTP client under the same faults (stage, classification,
which timeout fires) is in tests/engine/test_smtp.py; single-message end-to-end cases
(one 451, one 550, one partial 452, relay refusing) are in test_worker_e2e.py. Here
each fault hits a stream of messages through RabbitMQ, the engine and the store, and
the ledger proves nothing was lost or doubled.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import pytest

from tests.chaos.conftest import Make, Scenario, Start, patient
from tests.chaos.ledger import rows_by_key
from tests.support.smtp_server import Fault, FaultySMTPServer

pytestmark = pytest.mark.rabbitmq
MakeServer = Callable[..., FaultySMTPServer]


async def test_421_at_greeting_is_retried_and_everything_arrives_once(
    scenario: Scenario,
    make_smtp_server: MakeServer,
    engine_factory: Make,
    running: Start,
) -> None:
    server = make_smtp_server(
        faults=[Fault("connect", reply="421 4.3.2 too busy, try later", times=6)]
    )
    engine = await running(engine_factory(server.port, **patient()))
    await scenario.publish(40)
    ledger = await scenario.ledger(server, engine.db)
    ledger.check()
    assert ledger.delivered == 40
    assert server.faults[0].hits == 6


@pytest.mark.parametrize(
    "fault",
    [
        Fault("mail", reply="450 4.2.0 mailbox temporarily unavailable", times=5),
        Fault("rcpt", reply="450 4.2.1 mailbox busy", recipient="^u1", times=8),
        Fault("data", reply="451 4.3.0 local error, try again", times=5),
        Fault("after_data", reply="451 4.4.1 queue write failed", times=5),
        Fault("rcpt", reply="452 4.3.1 insufficient system storage", fraction=0.2),
    ],
    ids=["450-mail", "450-rcpt", "451-data", "451-final-dot", "452-rcpt-fifth"],
)
async def test_transient_replies_are_retried_until_delivered_once(
    fault: Fault,
    scenario: Scenario,
    make_smtp_server: MakeServer,
    engine_factory: Make,
    running: Start,
) -> None:
    server = make_smtp_server(faults=[fault])
    engine = await running(engine_factory(server.port, **patient()))
    await scenario.publish(40)
    ledger = await scenario.ledger(server, engine.db, fault_hits=lambda: fault.hits)
    ledger.check()
    assert ledger.delivered == 40 and fault.hits > 0
    rows = await rows_by_key(engine.db, scenario.keys)
    assert sum(r.attempts for r in rows.values()) == 40 + fault.hits


async def test_452_on_some_recipients_sends_the_rest_in_a_later_transaction(
    scenario: Scenario,
    make_smtp_server: MakeServer,
    engine_factory: Make,
    running: Start,
) -> None:
    """RFC 5321 §4.5.3.1.10: the accepted recipients get the message at once; the
    refused ones alone get it in a later transaction, never the accepted twice."""
    server = make_smtp_server(
        faults=[
            Fault("rcpt", reply="452 4.5.3 too many", recipient=rf"^c{i}@", times=1)
            for i in range(20)
        ]
    )
    engine = await running(engine_factory(server.port, **patient()))
    await scenario.publish(
        20, to=lambda i: [f"a{i}@example.com", f"b{i}@example.com", f"c{i}@example.com"]
    )
    ledger = await scenario.ledger(server, engine.db)
    ledger.check()
    assert ledger.delivered == 20
    per_key = Counter(r.job_key for r in server.received)
    assert set(per_key.values()) == {2}, per_key
    for key in scenario.keys:
        first, second = [r.recipients for r in server.received if r.job_key == key]
        assert len(first) == 2 and len(second) == 1 and second[0].startswith("c")
    rows = await rows_by_key(engine.db, scenario.keys)
    assert {s for r in rows.values() for s in r.rcpt_state.values()} == {"sent"}


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        (
            Fault("rcpt", reply="550 5.1.1 user unknown", recipient="^u[0-4]@"),
            "550 5.1.1",
        ),
        (Fault("mail", reply="553 5.1.8 sender domain refused", times=5), "553 5.1.8"),
        (Fault("after_data", reply="554 5.7.1 rejected as spam", times=5), "554 5.7.1"),
    ],
    ids=["550-rcpt", "553-mail", "554-final-dot"],
)
async def test_permanent_replies_go_dead_once_with_the_reply_and_the_rest_flows(
    fault: Fault,
    reason: str,
    scenario: Scenario,
    make_smtp_server: MakeServer,
    engine_factory: Make,
    running: Start,
) -> None:
    server = make_smtp_server(faults=[fault])
    engine = await running(engine_factory(server.port, **patient()))
    await scenario.publish(30)
    ledger = await scenario.ledger(server, engine.db)
    ledger.check()
    assert (ledger.dead, ledger.delivered) == (5, 25)
    rows = await rows_by_key(engine.db, scenario.keys)
    dead = [r for r in rows.values() if r.status == "dead"]
    assert all(r.attempts == 1 for r in dead), "a permanent refusal was retried"
    assert all(reason in (r.last_error or "") for r in dead), dead[0].last_error
    dead_keys = {r.idempotency_key for r in dead}
    assert not any(m.job_key in dead_keys for m in server.received)


async def test_drop_mid_data_is_retried_and_nothing_is_doubled(
    scenario: Scenario,
    make_smtp_server: MakeServer,
    engine_factory: Make,
    running: Start,
) -> None:
    server = make_smtp_server(faults=[Fault("data_body", drop=True, times=6)])
    engine = await running(engine_factory(server.port, **patient()))
    await scenario.publish(40)
    ledger = await scenario.ledger(server, engine.db)
    # The client cannot tell a drop mid-DATA from one after the dot, so it flags the
    # message; the relay never had it, and the ledger shows no copy.
    ledger.check()
    assert ledger.delivered == 40 and server.faults[0].hits == 6


async def test_drop_after_the_final_dot_is_the_one_counted_duplicate(
    scenario: Scenario,
    make_smtp_server: MakeServer,
    engine_factory: Make,
    running: Start,
) -> None:
    server = make_smtp_server(faults=[Fault("after_data", drop=True, times=4)])
    engine = await running(engine_factory(server.port, **patient()))
    await scenario.publish(40)
    ledger = await scenario.ledger(server, engine.db)
    ledger.check(allow_unknown_duplicates=True)
    assert ledger.delivered == 40
    assert ledger.duplicated == 4, "each unknown outcome is resent exactly once"
    assert ledger.flagged >= 4
    doubled = [mid for mid, n in server.count_by_message_id().items() if n > 1]
    assert len(doubled) == 4  # the copies share their Message-ID


async def test_a_stalled_relay_session_times_out_while_other_sends_flow(
    scenario: Scenario,
    make_smtp_server: MakeServer,
    engine_factory: Make,
    running: Start,
) -> None:
    server = make_smtp_server(
        faults=[Fault("rcpt", stall=float("inf"), recipient="^slow", times=3)]
    )
    settings = engine_factory(
        server.port, smtp={"timeout": 1.0, "pool_size": 4}, **patient()
    )
    engine = await running(settings)
    slow = await scenario.publish(1, prefix="slow", to=lambda i: f"slow{i}@example.com")
    await server.wait_for_event("rcpt")  # one connection now hangs
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    fast = await scenario.publish(40)
    await server.wait_for(40, timeout=20)
    flowing = loop.time() - t0
    ledger = await scenario.ledger(server, engine.db, fast_seconds=round(flowing, 2))
    ledger.check()
    assert ledger.delivered == 41
    rows = await rows_by_key(engine.db, slow + fast)
    assert rows[slow[0]].attempts == 4, "three timeouts, then the send"
    assert server.received[-1].job_key == slow[0], "the stalled one held others up"


async def _relay_down(
    seconds: float,
    scenario: Scenario,
    make_smtp_server: MakeServer,
    engine_factory: Make,
    running: Start,
) -> None:
    server = make_smtp_server()
    engine = await running(engine_factory(server.port, **patient(max_delay=2.0)))
    await scenario.publish(20)
    await server.wait_for(20)
    await server.stop_listening()
    await server.drop_connections()
    await scenario.publish(60)
    await asyncio.sleep(seconds)
    rows = await rows_by_key(engine.db, scenario.keys)
    waiting = sum(r.status in ("scheduled", "queued", "sending") for r in rows.values())
    await server.start_listening()
    ledger = await scenario.ledger(
        server, engine.db, timeout=60, outage_s=seconds, waiting_during_outage=waiting
    )
    ledger.check()
    assert ledger.delivered == 80 and waiting == 60


async def test_relay_down_for_a_few_seconds(
    scenario: Scenario,
    make_smtp_server: MakeServer,
    engine_factory: Make,
    running: Start,
) -> None:
    await _relay_down(3, scenario, make_smtp_server, engine_factory, running)


@pytest.mark.chaos
async def test_relay_down_for_30_seconds(
    scenario: Scenario,
    make_smtp_server: MakeServer,
    engine_factory: Make,
    running: Start,
) -> None:
    await _relay_down(30, scenario, make_smtp_server, engine_factory, running)
