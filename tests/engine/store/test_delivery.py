"""The delivery path's transitions, on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from mailconsole.engine.store.db import Database
from mailconsole.engine.store.delivery import DeliveryStore, NewMessage, Ref, Result
from mailconsole.engine.store.dto import Status
from mailconsole.engine.store.models import AttemptRow, MessageRow, SuppressionRow

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


@pytest.fixture
async def db(store_url: str) -> AsyncIterator[Database]:
    database = Database(store_url)
    await database.upgrade()
    yield database
    await database.dispose()


def new(message_id: str, **kw: object) -> NewMessage:
    fields: dict[str, object] = {
        "id": message_id,
        "status": Status.SENDING,
        "source_format": "extended",
        "payload": '{"from":"a@example.com","to":["b@example.com"],"text":"hi"}',
        "raw_body": None,
        "sender": "a@example.com",
        "recipients": ("b@example.com",),
        "rcpt_state": {"b@example.com": "pending"},
        "subject": "hello",
    }
    fields.update(kw)
    return NewMessage(**fields)  # type: ignore[arg-type]


def sent_result(message_id: str, attempts: int = 1) -> Result:
    return Result(
        id=message_id,
        status=Status.SENT,
        attempts=attempts,
        rcpt_state={"b@example.com": "sent"},
        next_attempt_at=None,
        last_error=None,
        last_code=None,
        last_enhanced=None,
        last_reply="250 ok",
        possible_duplicate=False,
        sent=True,
        attempt={
            "number": attempts,
            "started_at": NOW,
            "duration_ms": 3,
            "worker_id": "w1",
            "outcome": "sent",
            "stage": "data",
            "code": 250,
            "enhanced": None,
            "reply": "250 ok",
            "replies": [],
        },
    )


async def row(db: Database, message_id: str) -> MessageRow:
    async with db.read() as session:
        found = await session.get(MessageRow, message_id)
        assert found is not None
        return found


async def test_new_messages_are_claimed_and_duplicates_by_key_are_not(
    db: Database,
) -> None:
    store = DeliveryStore(db, "w1")
    await store.heartbeat(NOW, "h", 1)
    out = await store.ingest([new("m-1", idempotency_key="k1")], NOW)
    assert [o.action for o in out] == ["send"]
    again = await store.ingest(
        [new("m-2", idempotency_key="k1"), new("m-3", idempotency_key="k1")], NOW
    )
    assert [(o.action, o.message_id) for o in again] == [("duplicate", "m-1")] * 2
    assert (await row(db, "m-1")).duplicates == 2
    assert (await row(db, "m-1")).worker_id == "w1"


async def test_a_redelivered_body_without_key_matches_by_hash(db: Database) -> None:
    store = DeliveryStore(db, "w1")
    first = await store.ingest([new("m-1", body_sha256="abc")], NOW)
    assert first[0].action == "send"
    second = await store.ingest(
        [new("m-2", body_sha256="abc", match_by_hash=True)], NOW
    )
    assert second[0].action == "duplicate" and second[0].message_id == "m-1"
    # the same body published again on purpose (not redelivered) is a new message
    third = await store.ingest([new("m-3", body_sha256="abc")], NOW)
    assert third[0].action == "send"


async def test_results_are_recorded_only_while_this_worker_owns_the_row(
    db: Database,
) -> None:
    mine, other = DeliveryStore(db, "w1"), DeliveryStore(db, "w2")
    await mine.ingest([new("m-1")], NOW)
    await other.record_results([sent_result("m-1")], NOW)
    assert (await row(db, "m-1")).status == Status.SENDING
    await mine.record_results([sent_result("m-1")], NOW)
    stored = await row(db, "m-1")
    assert (stored.status, stored.attempts, stored.worker_id) == (Status.SENT, 1, None)
    assert stored.sent_at == NOW and stored.first_attempt_at == NOW
    async with db.read() as session:
        attempts = (await session.execute(select(AttemptRow))).scalars().all()
    assert [(a.message_id, a.code) for a in attempts] == [("m-1", 250)]


async def test_a_ref_claims_a_queued_row_once_and_a_sent_row_is_a_duplicate(
    db: Database,
) -> None:
    store = DeliveryStore(db, "w1")
    due = NOW + timedelta(seconds=5)
    await store.ingest([new("m-1", status=Status.SCHEDULED, next_attempt_at=due)], NOW)
    assert await store.claim_due(NOW, 10) == []
    assert await store.claim_due(due, 10) == ["m-1"]
    out = await store.ingest([Ref("m-1"), Ref("m-1")], due)
    assert [o.action for o in out] == ["send", "skip"]
    await store.record_results([sent_result("m-1")], due)
    late = await store.ingest([Ref("m-1"), Ref("m-gone")], due)
    assert [o.action for o in late] == ["duplicate", "skip"]


async def test_sends_of_a_silent_worker_are_recovered_as_possible_duplicates(
    db: Database,
) -> None:
    dead, alive = DeliveryStore(db, "w-dead"), DeliveryStore(db, "w-alive")
    await dead.heartbeat(NOW - timedelta(minutes=5), "h", 1)
    await dead.ingest([new("m-1"), new("m-2")], NOW)
    await alive.heartbeat(NOW, "h", 2)
    recovered = await alive.recover_orphans(NOW, NOW - timedelta(seconds=15))
    assert sorted(recovered) == ["m-1", "m-2"]
    stored = await row(db, "m-1")
    assert stored.status == Status.QUEUED and stored.possible_duplicate
    assert await alive.recover_orphans(NOW, NOW - timedelta(seconds=15)) == []


async def test_release_puts_untried_claims_back_without_the_duplicate_flag(
    db: Database,
) -> None:
    store = DeliveryStore(db, "w1")
    await store.ingest([new("m-1"), new("m-2")], NOW)
    assert await store.release(["m-1"], NOW) == ["m-1"]
    assert await store.release(["m-2"], NOW, possible_duplicate=True) == ["m-2"]
    one, two = await row(db, "m-1"), await row(db, "m-2")
    assert (one.status, one.possible_duplicate) == (Status.QUEUED, False)
    assert (two.status, two.possible_duplicate) == (Status.QUEUED, True)


async def test_stale_queued_rows_are_published_again(db: Database) -> None:
    store = DeliveryStore(db, "w1")
    await store.ingest([new("m-1")], NOW)
    await store.release(["m-1"], NOW)
    assert await store.requeue_stale(NOW + timedelta(seconds=10), 60, 10) == []
    assert await store.requeue_stale(NOW + timedelta(seconds=61), 60, 10) == ["m-1"]


async def test_suppressed_recipients_are_refused_at_ingest(db: Database) -> None:
    store = DeliveryStore(db, "w1")
    async with db.write() as session, session.begin():
        session.add(
            SuppressionRow(
                address="b@example.com",
                reason="550 5.1.1",
                source="bounce",
                created_at=NOW,
            )
        )
    out = await store.ingest(
        [
            new("m-1"),
            new(
                "m-2",
                recipients=("b@example.com", "c@example.com"),
                rcpt_state={"b@example.com": "pending", "c@example.com": "pending"},
            ),
        ],
        NOW,
    )
    assert [o.action for o in out] == ["stored", "send"]
    dead = await row(db, "m-1")
    assert dead.status == Status.DEAD and "suppression list" in (dead.last_error or "")
    assert out[1].claimed is not None
    assert out[1].claimed.rcpt_state == {
        "b@example.com": "refused",
        "c@example.com": "pending",
    }


async def test_concurrent_schedulers_never_claim_the_same_row(db: Database) -> None:
    setup = DeliveryStore(db, "w0")
    await setup.ingest(
        [
            new(f"m-{n}", status=Status.SCHEDULED, next_attempt_at=NOW)
            for n in range(60)
        ],
        NOW,
    )
    workers = [DeliveryStore(db, f"w{n}") for n in range(1, 4)]

    async def claim_all(store: DeliveryStore) -> list[str]:
        got: list[str] = []
        while batch := await store.claim_due(NOW, 7):
            got += batch
            await asyncio.sleep(0)
        return got

    results = await asyncio.gather(*(claim_all(w) for w in workers))
    claimed = [i for r in results for i in r]
    assert sorted(claimed) == sorted(f"m-{n}" for n in range(60))
