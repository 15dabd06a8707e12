"""The operations API over a seeded SQLite store and the real RabbitMQ: every action's
states before and after, its audit rows and what it publishes; then, with a live
engine and a real SMTP server, that replayed, edited and suppressed mail really goes
(or does not go) out."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from sqlalchemy import func, select

from mailconsole.config import Settings
from mailconsole.engine.broker import REF_HEADER
from mailconsole.engine.clock import FixedClock
from mailconsole.engine.errors import MailconsoleError, NotFound, WrongState
from mailconsole.engine.ops import Ops
from mailconsole.engine.runtime import Engine
from mailconsole.engine.store import rules
from mailconsole.engine.store.db import Database
from mailconsole.engine.store.models import AttemptRow, AuditRow, MessageRow
from mailconsole.engine.wire import WireError
from tests.support.engine import (
    fast_settings,
    publish_raw,
    wait_for_statuses,
    wait_until,
)
from tests.support.seed import NOW, many_dead, seed
from tests.support.smtp_server import Fault, FaultySMTPServer

pytestmark = pytest.mark.rabbitmq

Start = Callable[[Settings], Awaitable[Engine]]
Make = Callable[..., Settings]


# -- helpers ---------------------------------------------------------------------------
async def seeded(url: str, scenario: str) -> list[str]:
    db = Database(url)
    await db.upgrade()
    try:
        return await seed(db, scenario)
    finally:
        await db.dispose()


async def row(ops: Ops, message_id: str) -> MessageRow:
    async with ops.db.read() as session:
        found = await session.get(MessageRow, message_id)
    assert found is not None
    return found


async def audit_rows(ops: Ops, message_id: str | None = None) -> list[AuditRow]:
    stmt = select(AuditRow).order_by(AuditRow.id)
    if message_id is not None:
        stmt = stmt.where(AuditRow.message_id == message_id)
    async with ops.db.read() as session:
        return list((await session.execute(stmt)).scalars())


async def snapshot(ops: Ops) -> list[tuple[Any, ...]]:
    """Every message's state columns and the audit size: "nothing changed" checks."""
    async with ops.db.read() as session:
        rows = await session.execute(
            select(
                MessageRow.id,
                MessageRow.status,
                MessageRow.attempts,
                MessageRow.rcpt_state,
                MessageRow.next_attempt_at,
                MessageRow.updated_at,
            ).order_by(MessageRow.id)
        )
        audits = await session.scalar(select(func.count()).select_from(AuditRow))
    return [tuple(r) for r in rows] + [("audit", audits)]


async def drain_refs(amqp_url: str, queue: str) -> list[str]:
    """Ids of the refs waiting on the queue (taken off it)."""
    got: list[str] = []
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        q = await channel.declare_queue(queue, durable=True)
        while (message := await q.get(no_ack=True, fail=False)) is not None:
            ref = (message.headers or {}).get(REF_HEADER)
            got.append(ref.decode() if isinstance(ref, bytes) else str(ref))
    return got


@pytest.fixture
def store_file(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/store.db"


@pytest.fixture
async def ops(store_file: str, amqp_url: str, queue_name: str) -> AsyncIterator[Ops]:
    """Ops over the ``mixed`` store (see tests/support/seed.py) at a fixed time."""
    await seeded(store_file, "mixed")
    settings = fast_settings(
        queue=queue_name, smtp_port=1, database_url=store_file, amqp_url=amqp_url
    )
    opened = await Ops.open(settings, clock=FixedClock(NOW), actor="tester")
    yield opened
    await opened.close()


# -- replay ------------------------------------------------------------------------------
async def test_replay_queues_a_dead_message_afresh_audits_and_publishes_a_ref(
    ops: Ops, amqp_url: str, queue_name: str
) -> None:
    report = await ops.replay(["m-0003"], reason="relay fixed")
    assert (report.done, report.skipped, report.failed) == (("m-0003",), (), ())
    after = await row(ops, "m-0003")
    assert (after.status, after.attempts, after.rcpt_state) == (
        "queued",
        0,
        {"cy@example.org": "pending"},
    )
    assert after.age_from == NOW and after.next_attempt_at is None
    [entry] = await audit_rows(ops, "m-0003")
    assert (entry.actor, entry.action, entry.reason, entry.at) == (
        "tester",
        "replay",
        "relay fixed",
        NOW,
    )
    assert entry.details["from"] == "dead" and entry.details["force"] is False
    assert entry.details["recipients"] == ["cy@example.org"]
    assert await drain_refs(amqp_url, queue_name) == ["m-0003"]
    # The attempt history stays with the message.
    assert [a.number for a in (await ops.show("m-0003")).attempts] == [1]


async def test_replay_refuses_a_message_the_relay_partly_accepted_unless_forced(
    ops: Ops, amqp_url: str, queue_name: str
) -> None:
    before = await snapshot(ops)
    report = await ops.replay(["m-0006", "m-0001"])
    assert report.done == ()
    assert dict(report.skipped) == {
        "m-0006": "the relay already accepted it for 1 of 2 recipients; "
        "use --force to retry the others",
        "m-0001": "the relay accepted every recipient; use --force to send it again",
    }
    assert await snapshot(ops) == before
    assert await drain_refs(amqp_url, queue_name) == []

    forced = await ops.replay(["m-0006"], force=True)
    assert forced.done == ("m-0006",)
    after = await row(ops, "m-0006")
    # Only the refused recipient is tried again; the accepted one is not sent twice.
    assert after.rcpt_state == {"ann@example.com": "sent", "ben@example.net": "pending"}
    [entry] = await audit_rows(ops, "m-0006")
    assert entry.details["forced"] is True and entry.details["force"] is True
    assert entry.details["recipients"] == ["ben@example.net"]


async def test_replay_of_queued_held_or_unknown_messages_says_why_not(
    ops: Ops,
) -> None:
    report = await ops.replay(["m-0005", "m-0004", "m-nope"])
    assert dict(report.skipped) == {
        "m-0005": "cannot replay: it is queued already",
        "m-0004": "cannot replay: it is held (release it instead)",
        "m-nope": "not found",
    }


async def test_a_dry_run_reports_what_would_happen_and_changes_nothing(
    ops: Ops, amqp_url: str, queue_name: str
) -> None:
    before = await snapshot(ops)
    report = await ops.replay(query="status:dead", dry_run=True, reason="look")
    assert report.dry_run and report.done == ("m-0003",)
    assert [i for i, _ in report.skipped] == ["m-0006"]
    for action in (ops.hold, ops.delete):
        assert (await action(["m-0005"], dry_run=True)).done == ("m-0005",)
    assert (await ops.release(query="", dry_run=True)).done == ("m-0004",)
    assert await snapshot(ops) == before
    assert await drain_refs(amqp_url, queue_name) == []


async def test_a_bulk_replay_plans_then_replays_and_writes_a_summary(
    ops: Ops, amqp_url: str, queue_name: str
) -> None:
    plan = await ops.plan("replay", "status:dead")
    assert plan.count == 1 and plan.skipped_count == 1
    assert dict(plan.domains) == {"example.net": 1, "example.org": 1, "example.com": 1}
    assert sorted(n for _, n in plan.causes) == [1, 1]
    seen: list[tuple[int, int]] = []
    report = await ops.replay(
        query="status:dead", reason="bulk", progress=lambda d, t: seen.append((d, t))
    )
    assert report.done == ("m-0003",) and [i for i, _ in report.skipped] == ["m-0006"]
    assert seen[-1] == (2, 2)
    summary = [a for a in await audit_rows(ops) if a.message_id is None]
    assert len(summary) == 1
    assert (summary[0].filter, summary[0].count, summary[0].reason) == (
        "status:dead",
        1,
        "bulk",
    )
    assert summary[0].details | {"action_id": "-"} == {
        "action_id": "-",
        "force": False,
        "done": 1,
        "skipped": 1,
        "failed": 0,
    }
    # One action id ties the per-message rows to the summary.
    [per_message] = await audit_rows(ops, "m-0003")
    assert per_message.details["action_id"] == summary[0].details["action_id"]
    assert await drain_refs(amqp_url, queue_name) == ["m-0003"]


async def test_either_ids_or_a_filter(ops: Ops) -> None:
    with pytest.raises(MailconsoleError, match="give message ids or a filter"):
        await ops.replay(["m-0003"], query="status:dead")
    with pytest.raises(MailconsoleError, match="give message ids or a filter"):
        await ops.hold()


# -- hold, release, retry-now, delete ------------------------------------------------------
async def test_hold_and_release_a_queued_message_publishes_it_again(
    ops: Ops, amqp_url: str, queue_name: str
) -> None:
    assert (await ops.hold(["m-0005"], reason="bad data")).done == ("m-0005",)
    held = await row(ops, "m-0005")
    assert (held.status, held.held_from) == ("held", "queued")
    assert await drain_refs(amqp_url, queue_name) == []
    assert (await ops.hold(["m-0005"])).skipped == (("m-0005", "it is held already"),)
    assert (await ops.release(["m-0005"])).done == ("m-0005",)
    released = await row(ops, "m-0005")
    assert (released.status, released.held_from) == ("queued", None)
    assert await drain_refs(amqp_url, queue_name) == ["m-0005"]
    assert [a.action for a in await audit_rows(ops, "m-0005")] == ["hold", "release"]


async def test_a_held_scheduled_message_keeps_its_due_time_when_released(
    ops: Ops, amqp_url: str, queue_name: str
) -> None:
    due = (await row(ops, "m-0002")).next_attempt_at
    await ops.hold(["m-0002"])
    assert (await row(ops, "m-0002")).status == "held"
    await ops.release(["m-0002"])
    after = await row(ops, "m-0002")
    assert (after.status, after.next_attempt_at) == ("scheduled", due)
    assert await drain_refs(amqp_url, queue_name) == []


async def test_hold_release_and_retry_now_refuse_the_wrong_states(ops: Ops) -> None:
    assert dict((await ops.hold(["m-0001", "m-0003"])).skipped) == {
        "m-0001": "cannot hold: it was sent",
        "m-0003": "cannot hold: it is dead",
    }
    assert dict((await ops.release(["m-0005"])).skipped) == {
        "m-0005": "cannot release: it is queued already; it is not held"
    }
    assert dict((await ops.retry_now(["m-0004", "m-0003"])).skipped) == {
        "m-0004": "cannot retry now: it is held (release it first)",
        "m-0003": "cannot retry now: it is dead; only scheduled messages wait for a "
        "retry",
    }


async def test_retry_now_makes_a_scheduled_message_due(ops: Ops) -> None:
    was = (await row(ops, "m-0002")).next_attempt_at
    assert was is not None and was > NOW
    assert (await ops.retry_now(["m-0002"])).done == ("m-0002",)
    after = await row(ops, "m-0002")
    assert (after.status, after.next_attempt_at) == ("scheduled", NOW)
    [entry] = await audit_rows(ops, "m-0002")
    assert entry.details["was_due"] == was.isoformat()


async def test_delete_by_filter_keeps_the_row_and_the_audit(ops: Ops) -> None:
    report = await ops.delete(query="status:dead until:3m", reason="stale")
    assert sorted(report.done) == ["m-0003", "m-0006"]
    for message_id in ("m-0003", "m-0006"):
        assert (await row(ops, message_id)).status == "deleted"
        [entry] = await audit_rows(ops, message_id)
        assert (entry.action, entry.details["from"]) == ("delete", "dead")
    assert (await ops.delete(["m-0001"])).skipped == (
        ("m-0001", "cannot delete: it was sent"),
    )
    # Deleted is an end: nothing brings it back by accident.
    assert (await ops.replay(["m-0003"])).skipped == (
        ("m-0003", "cannot replay: it was deleted"),
    )


# -- edit ------------------------------------------------------------------------------------
async def test_an_invalid_edit_is_rejected_and_changes_nothing(
    ops: Ops, amqp_url: str, queue_name: str
) -> None:
    before = await snapshot(ops)
    job = (await ops.show("m-0003")).payload
    assert job is not None
    with pytest.raises(WireError, match="to"):
        await ops.edit("m-0003", {**job, "to": ["not an address"]})
    with pytest.raises(WrongState, match="only dead or held"):
        await ops.edit("m-0005", job)
    with pytest.raises(NotFound):
        await ops.edit("m-nope", job)
    assert await snapshot(ops) == before
    assert await drain_refs(amqp_url, queue_name) == []


async def test_an_edit_stores_a_linked_copy_and_leaves_the_original(
    ops: Ops, amqp_url: str, queue_name: str
) -> None:
    job = (await ops.show("m-0003")).payload
    assert job is not None
    fixed = {**job, "to": ["cy@example.com"], "subject": "Order 3 shipped (fixed)"}
    new_id = await ops.edit("m-0003", fixed, reason="typo in domain")
    original, copy = await ops.show("m-0003"), await ops.show(new_id)
    assert original.summary.status == "dead" and original.edited_into == (new_id,)
    assert copy.summary.edited_from == "m-0003" and copy.summary.status == "queued"
    assert copy.summary.recipients == ("cy@example.com",)
    assert copy.payload is not None and copy.payload["id"] == new_id
    assert [(a.action, a.details["edited_from"]) for a in copy.audit] == [
        ("edit", "m-0003")
    ]
    [entry] = original.audit
    assert entry.reason == "typo in domain" and entry.details["replaced_by"] == new_id
    assert await drain_refs(amqp_url, queue_name) == [new_id]


async def test_editing_a_held_message_replaces_it(ops: Ops) -> None:
    job = (await ops.show("m-0004")).payload
    assert job is not None
    new_id = await ops.edit("m-0004", {**job, "subject": "Order 4 shipped!"})
    assert (await row(ops, "m-0004")).status == "deleted"
    assert (await ops.release(["m-0004"])).done == ()  # cannot be sent as well
    assert (await row(ops, new_id)).status == "queued"


# -- suppressions, reads, transfer -------------------------------------------------------------
async def test_suppress_add_list_remove_each_audited(ops: Ops) -> None:
    assert await ops.suppress(" Ben@Example.NET ", reason="complaint") is True
    assert await ops.suppress("ben@example.net") is False
    [(address, reason, since)] = await ops.suppressions()
    assert (address, reason, since) == ("ben@example.net", "complaint", NOW)
    assert await ops.suppressions("nobody") == []
    await ops.unsuppress("BEN@example.net", reason="asked to be mailed again")
    assert await ops.suppressions() == []
    with pytest.raises(NotFound, match="not on the suppression list"):
        await ops.unsuppress("ben@example.net")
    with pytest.raises(MailconsoleError, match="address"):
        await ops.suppress("not an address")
    entries = [
        (a.action, a.reason, a.details["address"]) for a in await audit_rows(ops)
    ]
    assert entries == [
        ("suppress", "complaint", "ben@example.net"),
        ("unsuppress", "asked to be mailed again", "ben@example.net"),
    ]


async def test_editing_to_a_suppressed_address_is_refused(ops: Ops) -> None:
    await ops.suppress("cy@example.com")
    job = (await ops.show("m-0003")).payload
    assert job is not None
    with pytest.raises(WrongState, match=r"on the suppression list: cy@example\.com"):
        await ops.edit("m-0003", {**job, "to": ["cy@example.com"]})


async def test_reads_list_count_failures_and_stats(
    ops: Ops, amqp_url: str, queue_name: str
) -> None:
    page = await ops.list_messages("status:dead", limit=1)
    assert [m.id for m in page.items] == ["m-0006"] and page.next_cursor
    rest = await ops.list_messages("status:dead", cursor=page.next_cursor)
    assert [m.id for m in rest.items] == ["m-0003"] and rest.next_cursor is None
    assert await ops.count("to:@example.net") == 3
    groups = await ops.failures("status:dead")
    assert [(g.count, g.domain) for g in groups] == [
        (1, "example.net"),
        (1, "example.org"),
    ]
    both = await ops.failures("")
    assert {g.code for g in both} == {451, 550}
    await ops.replay(["m-0003"])

    async def counted() -> bool:  # the broker's count catches up a moment later
        return (await ops.stats()).queue_ready == 1

    await wait_until(counted, 5, "the ref counted on the queue")
    stats = await ops.stats()
    assert stats.by_status["queued"] == 2
    assert stats.consumers == 0 and stats.oldest_waiting_age == 8 * 60


async def test_export_then_import_publishes_the_same_jobs_as_new_ones(
    ops: Ops, amqp_url: str, queue_name: str
) -> None:
    records = [r async for r in ops.export_jobs("status:dead", reason="move")]
    assert [r["meta"]["id"] for r in records] == ["m-0003", "m-0006"]
    assert records[0]["meta"]["last_code"] == 550
    assert records[0]["job"]["subject"] == "Order 3 shipped"
    jobs = [{k: v for k, v in r["job"].items() if k != "id"} for r in records]
    assert await ops.import_jobs(jobs, dry_run=True) == []
    ids = await ops.import_jobs(jobs, reason="move")
    assert len(set(ids)) == 2 and not set(ids) & {"m-0003", "m-0006"}
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        q = await channel.declare_queue(queue_name, durable=True)
        bodies = []
        while (message := await q.get(no_ack=True, fail=False)) is not None:
            bodies.append(json.loads(message.body))
    assert [b["id"] for b in bodies] == ids
    assert [b["subject"] for b in bodies] == ["Order 3 shipped", "Order 6 shipped"]
    assert [(a.action, a.count, a.filter) for a in await audit_rows(ops)] == [
        ("export", 2, "status:dead"),
        ("import", 2, None),
    ]
    with pytest.raises(WireError):
        await ops.import_jobs([{"from": "a@example.com", "to": "nobody"}])


# -- with a live engine --------------------------------------------------------------------
async def test_a_replayed_message_is_delivered_once_with_its_message_id(
    smtp_server: FaultySMTPServer, engine_factory: Make, running: Start
) -> None:
    settings = engine_factory(smtp_server.port)
    await seeded(settings.database_url.get_secret_value(), "three_dead")
    engine = await running(settings)
    report = await engine.ops("tester").replay(query="status:dead")
    assert sorted(report.done) == ["m-0001", "m-0002", "m-0003"]
    await wait_for_statuses(engine.db, {"sent": 3})
    await engine.run_until_idle()
    assert sorted(smtp_server.count_by_message_id().items()) == [
        (f"<m-000{n}@mailconsole.local>", 1) for n in (1, 2, 3)
    ]
    async with engine.db.read() as session:
        numbers = (
            await session.execute(
                select(AttemptRow.number, AttemptRow.outcome)
                .where(AttemptRow.message_id == "m-0001")
                .order_by(AttemptRow.id)
            )
        ).all()
    # History kept, counter restarted: the replay's attempt is number 1 again.
    assert [tuple(n) for n in numbers] == [(1, "permanent"), (1, "sent")]


async def test_mail_to_a_suppressed_address_goes_dead_without_an_smtp_attempt(
    smtp_server: FaultySMTPServer,
    engine_factory: Make,
    running: Start,
) -> None:
    engine = await running(engine_factory(smtp_server.port))
    ops = engine.ops("tester")
    await ops.suppress("gone@example.com", reason="mailbox closed")
    new_id = await ops.send(
        {"from": "shop@example.com", "to": "gone@example.com", "text": "hi"}
    )
    await wait_for_statuses(engine.db, {"dead": 1})
    await engine.run_until_idle()
    detail = await ops.show(new_id)
    assert detail.attempts == () and detail.rcpt_state == {
        "gone@example.com": "refused"
    }
    assert detail.summary.last_error is not None
    assert "suppression list" in detail.summary.last_error
    assert "mailbox closed" in detail.summary.last_error
    assert "mail" not in smtp_server.events and smtp_server.received == []


async def test_a_hard_bounce_suppresses_the_address_for_the_next_message(
    make_smtp_server: Callable[..., FaultySMTPServer],
    engine_factory: Make,
    running: Start,
) -> None:
    server = make_smtp_server(
        faults=[Fault("rcpt", reply="550 5.1.1 <x>: no such user", times=1)]
    )
    engine = await running(engine_factory(server.port))
    ops = engine.ops("tester")
    job = {"from": "shop@example.com", "to": "typo@example.com", "text": "hi"}
    await ops.send(job)
    await wait_for_statuses(engine.db, {"dead": 1})
    await engine.run_until_idle()
    assert [a for a, _, _ in await ops.suppressions()] == ["typo@example.com"]
    rcpts = server.events.count("rcpt")
    await ops.send(job)
    await wait_for_statuses(engine.db, {"dead": 2})
    assert server.events.count("rcpt") == rcpts


async def test_an_edited_copy_is_delivered_and_the_original_stays_dead(
    smtp_server: FaultySMTPServer, engine_factory: Make, running: Start
) -> None:
    settings = engine_factory(smtp_server.port)
    await seeded(settings.database_url.get_secret_value(), "three_dead")
    engine = await running(settings)
    ops = engine.ops("tester")
    job = (await ops.show("m-0002")).payload
    assert job is not None
    new_id = await ops.edit("m-0002", {**job, "to": ["carol@example.com"]})
    await wait_until(
        lambda: _status_is(ops, new_id, "sent"), what=f"{new_id} sent", timeout=10
    )
    [got] = smtp_server.received
    assert got.recipients == ("carol@example.com",)
    assert got.message_id == f"<{new_id}@mailconsole.local>"
    assert (await ops.show("m-0002")).summary.status == "dead"


async def _status_is(ops: Ops, message_id: str, status: str) -> bool:
    return (await ops.show(message_id)).summary.status == status


async def test_retry_now_wakes_the_scheduler_and_the_message_goes(
    make_smtp_server: Callable[..., FaultySMTPServer],
    engine_factory: Make,
    running: Start,
) -> None:
    server = make_smtp_server(faults=[Fault("rcpt", reply="451 4.7.1 later", times=1)])
    # A long first retry delay: only retry-now can make it go within the test.
    settings = engine_factory(
        server.port, retry={"base_delay": 600, "max_delay": 600, "max_age": 3600}
    )
    engine = await running(settings)
    ops = engine.ops("tester")
    message_id = await ops.send(
        {"from": "shop@example.com", "to": "bob@example.com", "text": "hi"}
    )
    await wait_for_statuses(engine.db, {"scheduled": 1})
    assert (await ops.retry_now([message_id])).done == (message_id,)
    await wait_for_statuses(engine.db, {"sent": 1}, timeout=10)
    await asyncio.sleep(0)
    assert len(server.received) == 1


# -- the suppression list and operator actions ---------------------------------------------
async def test_replay_and_release_honour_the_suppression_list(
    ops: Ops, amqp_url: str, queue_name: str
) -> None:
    await ops.suppress("cy@example.org")
    await ops.suppress("ann@example.com")
    plan = await ops.plan("replay", "status:dead")
    assert plan.count == 0 and plan.skipped_count == 2
    before = await snapshot(ops)
    why = "(`mailconsole suppress remove ADDRESS` first)"
    assert dict((await ops.replay(["m-0003"])).skipped) == {
        "m-0003": f"on the suppression list: cy@example.org {why}"
    }
    assert dict((await ops.release(["m-0004"])).skipped) == {
        "m-0004": f"on the suppression list: ann@example.com {why}"
    }
    assert await snapshot(ops) == before
    await ops.unsuppress("cy@example.org")
    assert (await ops.replay(["m-0003"])).done == ("m-0003",)
    assert await drain_refs(amqp_url, queue_name) == ["m-0003"]


def test_a_suppressed_recipient_is_dropped_and_the_others_still_sent() -> None:
    @dataclass
    class Row:
        id: str = "m-1"
        status: str = "dead"
        rcpt_state: dict[str, str] | None = None
        possible_duplicate: bool = False
        held_from: str | None = None
        next_attempt_at: datetime | None = None
        has_payload: bool = True

    row = Row(rcpt_state={"A@x.com": "refused", "b@y.com": "refused"})
    change = rules.decide_replay(row, NOW, force=False)
    assert isinstance(change, rules.Change)
    kept = rules.without_suppressed(change, row, {"a@x.com"})
    assert isinstance(kept, rules.Change)
    assert kept.values["rcpt_state"] == {"A@x.com": "refused", "b@y.com": "pending"}
    assert kept.note["recipients"] == ["b@y.com"]
    assert kept.note["suppressed"] == ["A@x.com"]
    both = rules.without_suppressed(change, row, {"a@x.com", "b@y.com"})
    assert isinstance(both, str) and both.startswith("on the suppression list")


async def test_a_throttled_replay_goes_in_steps_of_the_rate(
    tmp_path: Path, amqp_url: str, queue_name: str
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/many.db"
    db = Database(url)
    await db.upgrade()
    ids = await many_dead(db, 150)
    await db.dispose()
    settings = fast_settings(
        queue=queue_name, smtp_port=1, database_url=url, amqp_url=amqp_url
    )
    async with await Ops.open(settings, actor="tester") as ops:
        steps: list[tuple[int, int]] = []
        report = await ops.replay(
            query="status:dead", rate=100, progress=lambda d, t: steps.append((d, t))
        )
    # A second's worth per batch, then a pause: never a burst above the rate.
    assert steps == [(100, 150), (150, 150)]
    assert sorted(report.done) == ids
    assert sorted(await drain_refs(amqp_url, queue_name)) == ids


async def test_an_update_that_misses_its_row_undoes_the_batch(ops: Ops) -> None:
    """Rows are decided under a lock, so this cannot happen through the API; if
    something bypassed the lock, the batch rolls back instead of auditing a change
    that did not happen."""
    from mailconsole.engine.store.admin import _update

    before = await snapshot(ops)
    stale = rules.Change("m-0003", "queued", {"status": "held"})  # it is dead
    fresh = rules.Change("m-0005", "queued", {"status": "held"})
    with pytest.raises(WrongState, match="changed state while this action ran"):
        async with ops.db.write() as session, session.begin():
            await _update(session, [fresh, stale])
    assert await snapshot(ops) == before


async def test_mail_rejected_on_arrival_is_fixed_by_edit_not_replay(
    amqp_url: str,
    queue_name: str,
    smtp_server: FaultySMTPServer,
    engine_factory: Make,
    running: Start,
) -> None:
    engine = await running(engine_factory(smtp_server.port))
    ops = engine.ops("tester")
    await publish_raw(amqp_url, queue_name, [b'{"from": "shop@example.com", "to": 5}'])
    [dead] = (await wait_for_statuses(engine.db, {"dead": 1})).keys()
    detail = await ops.show(dead)
    assert detail.payload is None and detail.raw_body is not None
    assert (await ops.replay([dead])).skipped == (
        (dead, "cannot replay: it was rejected on arrival; fix it with `edit`"),
    )
    job = {"from": "shop@example.com", "to": ["five@example.com"], "text": "hi"}
    new_id = await ops.edit(dead, job, reason="fixed the recipient")
    await wait_until(
        lambda: _status_is(ops, new_id, "sent"), what=f"{new_id} sent", timeout=10
    )
    assert [r.recipients for r in smtp_server.received] == [("five@example.com",)]
    assert (await ops.show(dead)).edited_into == (new_id,)
