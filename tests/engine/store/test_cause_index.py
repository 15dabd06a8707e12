"""The failure-cause index follows each message's latest failure, on every backend,
and the migration that introduced it fills it for what was already stored."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import timedelta

import pytest
from alembic import command
from sqlalchemy import Connection, insert, select, update

from mailconsole.config import Settings
from mailconsole.engine.clock import FixedClock
from mailconsole.engine.events import EventBus
from mailconsole.engine.filters import parse
from mailconsole.engine.ops import Ops
from mailconsole.engine.store.causes import causes
from mailconsole.engine.store.db import Database, alembic_config
from mailconsole.engine.store.delivery import DeliveryStore
from mailconsole.engine.store.dto import Status
from mailconsole.engine.store.models import CauseRow, MessageRow
from mailconsole.engine.store.queries import Queries
from tests.support.seed import (
    GREYLISTED,
    NOW,
    SEED_WORKER,
    USER_UNKNOWN,
    _dead_row,
    new_message,
    result,
)

COM, ORG = "bob@example.com", "ann@example.org"


@pytest.fixture
async def db(store_url: str) -> AsyncIterator[Database]:
    database = Database(store_url)
    yield database
    await database.dispose()


async def indexed(db: Database, message_id: str) -> set[tuple[int | None, str, str]]:
    async with db.read() as session:
        rows = await session.execute(
            select(CauseRow.code, CauseRow.reply, CauseRow.domain).where(
                CauseRow.message_id == message_id
            )
        )
        return {(code, reply, domain) for code, reply, domain in rows.all()}


async def claimed_again(db: Database, message_id: str) -> None:
    """What a worker's claim does to a due row (the scheduler is not under test)."""
    async with db.write() as session, session.begin():
        await session.execute(
            update(MessageRow)
            .where(MessageRow.id == message_id)
            .values(status=Status.SENDING, worker_id=SEED_WORKER)
        )


async def test_causes_follow_the_latest_failure_and_leave_on_replay(
    db: Database,
) -> None:
    await db.upgrade()
    store, q = DeliveryStore(db, SEED_WORKER), Queries(db)
    await store.ingest([new_message(1, COM, ORG)], NOW)
    pending = {COM: "pending", ORG: "pending"}
    later = NOW + timedelta(minutes=5)
    await store.record_results(
        [
            result(
                "m-0001",
                Status.SCHEDULED,
                pending,
                GREYLISTED,
                at=NOW,
                next_attempt_at=later,
            )
        ],
        NOW,
    )
    greylisted = "greylisted, try again in <n> seconds"
    assert await indexed(db, "m-0001") == {
        (451, greylisted, "example.com"),
        (451, greylisted, "example.org"),
    }
    groups = await q.failures(parse("status:scheduled"), NOW, 10)
    assert sorted((g.domain, g.count) for g in groups) == [
        ("example.com", 1),
        ("example.org", 1),
    ]

    await claimed_again(db, "m-0001")
    refused = result(
        "m-0001", Status.DEAD, {COM: "refused", ORG: "sent"}, USER_UNKNOWN, at=later
    )
    await store.record_results([replace(refused, attempts=2)], later)
    unknown = "<addr>: recipient address rejected: user unknown"
    assert await indexed(db, "m-0001") == {(550, unknown, "example.com")}
    (group,) = await q.failures(parse(""), later, 10)
    assert (group.code, group.domain, group.count, group.example_id) == (
        550,
        "example.com",
        1,
        "m-0001",
    )
    assert await q.count(await q.where(parse(f"group:{group.key[:5]}"), later)) == 1

    ops = Ops(
        Settings(),
        db=db,
        broker=None,
        bus=EventBus(),
        clock=FixedClock(later),
        actor="test",
    )
    await ops.replay(["m-0001"], force=True)  # no broker: queued, published later
    assert (await ops.show("m-0001")).summary.status == "queued"
    assert await indexed(db, "m-0001") == set()
    assert await q.failures(parse("status:dead"), later, 10) == []
    assert await q.count(await q.where(parse(f"group:{group.key}"), later)) == 0


def _upgrade_to(revision: str) -> Callable[[Connection], None]:
    def run(connection: Connection) -> None:
        cfg = alembic_config()
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)

    return run


async def test_the_migration_indexes_the_failures_already_stored(db: Database) -> None:
    async with db.write_engine.begin() as conn:
        await conn.run_sync(_upgrade_to("0002"))
    text = USER_UNKNOWN[2].format(rcpt=COM)
    dead = _dead_row("m-0001", {"subject": "Order 1"}, COM, text, NOW)
    scheduled = _dead_row("m-0002", {"subject": "Order 2"}, ORG, GREYLISTED[2], NOW)
    scheduled |= {
        "status": Status.SCHEDULED,
        "last_code": 451,
        "last_enhanced": "4.7.1",
    }
    sent = _dead_row("m-0003", {"subject": "Order 3"}, COM, "250 ok", NOW)
    sent |= {"status": Status.SENT, "rcpt_state": {COM: "sent"}}
    async with db.write() as session, session.begin():
        await session.execute(insert(MessageRow), [dead, scheduled, sent])

    await db.upgrade()

    async with db.read() as session:
        rows = (await session.execute(select(CauseRow.message_id, CauseRow.key))).all()
    assert sorted(rows) == [
        ("m-0001", causes(550, "5.1.1", text, {COM: "refused"})[0][0]),
        ("m-0002", causes(451, "4.7.1", GREYLISTED[2], {ORG: "refused"})[0][0]),
    ]
