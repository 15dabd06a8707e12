"""Operator actions racing a live worker: replay while it sends, hold as a message
becomes due, delete while it sends. Each race runs for 30 messages at once with
random timing, against a real RabbitMQ queue, each store backend and an SMTP server that
is slow (every MAIL stalls, so sends are in flight for a while) and sometimes says
451 (so messages cycle through scheduled and queued). What must hold every time:
each message is delivered at most once (counted by Message-ID at the server), and it
ends in a defined state, never lost.

The operator uses an :class:`Ops` of its own (its own connections, as a CLI process
on the same machine would), not the engine's.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import pytest

from mailconsole.config import Settings
from mailconsole.engine.clock import Clock
from mailconsole.engine.ops import Ops
from mailconsole.engine.runtime import Engine
from mailconsole.engine.store.db import Database
from tests.support.engine import statuses, wait_until
from tests.support.seed import many_dead
from tests.support.smtp_server import Fault, FaultySMTPServer

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(60)]

Start = Callable[[Settings], Awaitable[Engine]]
Make = Callable[..., Settings]
N = 30
SEND_STALL = 0.1
"""Seconds every SMTP transaction stalls at MAIL: the window a worker is sending."""


@pytest.fixture
def slow_server(make_smtp_server: Callable[..., FaultySMTPServer]) -> FaultySMTPServer:
    return make_smtp_server(
        faults=[
            Fault("mail", stall=SEND_STALL),
            Fault("rcpt", reply="451 4.3.0 try again later", fraction=0.3, seed=7),
        ]
    )


@pytest.fixture
def settings(
    slow_server: FaultySMTPServer, engine_factory: Make, store_url: str
) -> Settings:
    """On each store backend: their locking differs (SQLite serialises writers,
    PostgreSQL and MariaDB lock rows)."""
    # Enough attempts that a 30 % transient failure never kills a message here.
    return engine_factory(
        slow_server.port, database_url=store_url, retry={"max_attempts": 30}
    )


@pytest.fixture
async def operator(settings: Settings) -> AsyncIterator[Ops]:
    ops = await Ops.open(settings, actor="racer")
    yield ops
    await ops.close()


def deliveries(server: FaultySMTPServer) -> Counter[str]:
    """Message id -> times the server accepted it."""
    out: Counter[str] = Counter()
    for message_id, n in server.count_by_message_id().items():
        assert message_id is not None
        out[message_id.strip("<>").split("@")[0]] += n
    return out


async def settle(engine: Engine, ids: list[str], ends: set[str]) -> dict[str, str]:
    """Wait until every message is in one of ``ends``; returns their states."""
    seen: dict[str, str] = {}

    async def ended() -> bool:
        nonlocal seen
        seen = await statuses(engine.db)
        return all(seen.get(i) in ends for i in ids)

    try:
        await wait_until(ended, 20, f"all {len(ids)} messages in {sorted(ends)}")
    except AssertionError as exc:
        stuck = Counter(seen.get(i) for i in ids)
        raise AssertionError(f"{exc}; states: {dict(stuck)}") from None
    await engine.run_until_idle(timeout=10)
    return {i: seen[i] for i in ids}


def job(n: int, **extra: object) -> dict[str, object]:
    return {
        "from": "shop@example.com",
        "to": f"user{n}@example.com",
        "subject": f"Race {n}",
        "text": "x",
        **extra,
    }


async def test_replay_while_a_worker_sends_never_sends_twice(
    settings: Settings,
    running: Start,
    operator: Ops,
    slow_server: FaultySMTPServer,
) -> None:
    db = Database(settings.database_url.get_secret_value())
    await db.upgrade()
    ids = await many_dead(db, N)
    await db.dispose()
    engine = await running(settings)
    rng = random.Random(1)
    why_not: Counter[str] = Counter()
    replayed: Counter[str] = Counter()

    async def hammer(message_id: str) -> None:
        # Replay again and again until it is sent: while it is queued, in flight,
        # failed (scheduled) and after it was sent.
        await asyncio.sleep(rng.uniform(0, 0.2))
        for _ in range(200):
            report = await operator.replay([message_id])
            replayed[message_id] += len(report.done)
            for _, reason in report.skipped:
                why_not[reason] += 1
            if report.skipped and "accepted every" in report.skipped[0][1]:
                return  # sent
            await asyncio.sleep(rng.uniform(0.005, 0.03))

    await asyncio.gather(*(hammer(i) for i in ids))
    final = await settle(engine, ids, {"sent"})
    assert set(final.values()) == {"sent"}
    assert deliveries(slow_server) == dict.fromkeys(ids, 1)
    # The race was really run: replays met messages queued, in flight and sent.
    assert why_not["cannot replay: it is being sent right now"] > 0
    assert why_not["cannot replay: it is queued already"] > 0
    assert all(replayed[i] >= 1 for i in ids)


async def test_hold_as_a_message_becomes_due_never_sends_it_while_held(
    settings: Settings,
    running: Start,
    operator: Ops,
    slow_server: FaultySMTPServer,
) -> None:
    engine = await running(settings)
    now = Clock().now()
    due = [now + timedelta(seconds=0.5 + n * 0.02) for n in range(N)]
    ids = [
        await operator.send(job(n, send_at=at.isoformat())) for n, at in enumerate(due)
    ]
    rng = random.Random(2)
    held: list[str] = []
    refused: Counter[str] = Counter()

    async def hold_near_due(message_id: str, at: float) -> None:
        # From a little before it is due to well after (then it may be in a retry).
        delay = (due[0] - Clock().now()).total_seconds() + at + rng.uniform(-0.1, 0.3)
        await asyncio.sleep(max(0.0, delay))
        report = await operator.hold([message_id], reason="race")
        held.extend(report.done)
        for _, reason in report.skipped:
            refused[reason] += 1

    await asyncio.gather(*(hold_near_due(i, n * 0.02) for n, i in enumerate(ids)))
    # Held messages stay unsent however long the worker runs.
    await asyncio.sleep(0.5)
    await engine.run_until_idle(timeout=10)
    assert not set(held) & set(deliveries(slow_server))
    states = await statuses(engine.db)
    assert {states[i] for i in held} <= {"held"}
    assert held, "no hold won the race: the timing no longer tests anything"
    report = await operator.release(held, reason="race over")
    assert sorted(report.done) == sorted(held)
    final = await settle(engine, ids, {"sent"})
    assert set(final.values()) == {"sent"}
    assert deliveries(slow_server) == dict.fromkeys(ids, 1)
    assert set(refused) <= {
        "cannot hold: it is being sent right now",
        "cannot hold: it was sent",
    }


async def test_delete_while_a_worker_sends_either_deletes_or_delivers_once(
    settings: Settings,
    running: Start,
    operator: Ops,
    slow_server: FaultySMTPServer,
) -> None:
    engine = await running(settings)
    ids = [await operator.send(job(n)) for n in range(N)]
    rng = random.Random(3)
    deleted: set[str] = set()

    async def delete_soon(message_id: str) -> None:
        await asyncio.sleep(rng.uniform(0, 0.6))
        for _ in range(100):
            report = await operator.delete([message_id], reason="race")
            deleted.update(report.done)
            [*_, last] = [*report.done, *(r for _, r in report.skipped)]
            if report.done or last in ("cannot delete: it was sent",):
                return
            await asyncio.sleep(rng.uniform(0.005, 0.03))

    await asyncio.gather(*(delete_soon(i) for i in ids))
    final = await settle(engine, ids, {"sent", "deleted"})
    sent = deliveries(slow_server)
    for message_id, state in final.items():
        expected = 1 if state == "sent" else 0
        assert sent[message_id] == expected, (message_id, state)
    assert {i for i, s in final.items() if s == "deleted"} == deleted
    assert deleted, "no delete won the race: the timing no longer tests anything"
    assert len(deleted) < N, "every delete won: nothing was in flight"
