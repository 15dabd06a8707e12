"""End to end: a real RabbitMQ queue, the engine, SQLite, and a real SMTP server."""

from __future__ import annotations

import base64
import email
import email.policy
import json
from collections.abc import Awaitable, Callable
from email.message import EmailMessage

import pytest
from sqlalchemy import select

from mailconsole.config import Settings
from mailconsole.engine.runtime import Engine
from mailconsole.engine.store.models import AttemptRow, MessageRow
from tests.support.engine import dotnet_job, publish_raw, wait_for_statuses, wait_until
from tests.support.smtp_server import Fault, FaultySMTPServer

pytestmark = pytest.mark.rabbitmq

Start = Callable[[Settings], Awaitable[Engine]]
Make = Callable[..., Settings]


async def only_row(engine: Engine) -> MessageRow:
    async with engine.db.read() as session:
        rows = (await session.execute(select(MessageRow))).scalars().all()
    assert len(rows) == 1
    return rows[0]


async def attempts_of(engine: Engine, message_id: str) -> list[AttemptRow]:
    async with engine.db.read() as session:
        result = await session.execute(
            select(AttemptRow)
            .where(AttemptRow.message_id == message_id)
            .order_by(AttemptRow.number)
        )
        return list(result.scalars())


async def test_a_dotnet_job_from_a_plain_producer_is_delivered_once(
    amqp_url: str,
    queue_name: str,
    smtp_server: FaultySMTPServer,
    engine_factory: Make,
    running: Start,
) -> None:
    engine = await running(engine_factory(smtp_server.port))
    await publish_raw(amqp_url, queue_name, [dotnet_job(1, "bob@example.com")])
    await wait_for_statuses(engine.db, {"sent": 1})
    await engine.run_until_idle()
    assert len(smtp_server.received) == 1
    got = smtp_server.received[0]
    assert got.envelope_from == "shop@example.com" and got.recipients == (
        "bob@example.com",
    )
    parsed = email.message_from_bytes(got.data, policy=email.policy.default)
    assert parsed["Subject"] == "Order 1"
    assert parsed["To"] == "User 1 <bob@example.com>"
    row = await only_row(engine)
    assert parsed["Message-ID"] == f"<{row.id}@mailconsole.local>"
    assert (row.attempts, row.source_format) == (1, "dotnet")


async def test_an_extended_job_with_cc_bcc_and_attachment_arrives_intact(
    amqp_url: str,
    queue_name: str,
    smtp_server: FaultySMTPServer,
    engine_factory: Make,
    running: Start,
) -> None:
    engine = await running(engine_factory(smtp_server.port))
    pdf = b"%PDF-1.4 fake \x00\x01\x02 binary"
    job = {
        "id": "order-42",
        "from": {"name": "Shöp", "email": "shop@example.com"},
        "to": ["Bob <bob@example.com>"],
        "cc": ["carol@example.org"],
        "bcc": ["audit@example.net"],
        "subject": "Rechnung Nr. 42 — danke",
        "text": "Hello Bob",
        "html": "<p>Hello <b>Bob</b></p>",
        "attachments": [
            {
                "filename": "invoice.pdf",
                "content_type": "application/pdf",
                "content_base64": base64.b64encode(pdf).decode(),
            }
        ],
    }
    await publish_raw(amqp_url, queue_name, [json.dumps(job).encode()], persistent=True)
    await wait_for_statuses(engine.db, {"sent": 1})
    [got] = smtp_server.received
    assert set(got.recipients) == {
        "bob@example.com",
        "carol@example.org",
        "audit@example.net",
    }
    msg = email.message_from_bytes(got.data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    assert msg["Subject"] == "Rechnung Nr. 42 — danke"
    assert msg["Bcc"] is None and "audit@example.net" not in got.data.decode("ascii")
    assert msg["Cc"] == "carol@example.org"
    body = msg.get_body(("plain",))
    assert body is not None and body.get_content().strip() == "Hello Bob"
    [attachment] = list(msg.iter_attachments())
    assert attachment.get_filename() == "invoice.pdf"
    assert attachment.get_content() == pdf
    assert not got.bare_crlf


async def test_451_then_250_is_delivered_once_after_two_attempts(
    amqp_url: str,
    queue_name: str,
    make_smtp_server: Callable[..., FaultySMTPServer],
    engine_factory: Make,
    running: Start,
) -> None:
    server = make_smtp_server(
        faults=[Fault("data", reply="451 4.3.0 try again later", times=1)]
    )
    engine = await running(engine_factory(server.port))
    await publish_raw(amqp_url, queue_name, [dotnet_job(7)])
    await wait_for_statuses(engine.db, {"sent": 1})
    row = await only_row(engine)
    assert row.attempts == 2
    attempts = await attempts_of(engine, row.id)
    assert [(a.outcome, a.code) for a in attempts] == [
        ("transient", 451),
        ("sent", 250),
    ]
    assert len(server.received) == 1


async def test_550_goes_dead_with_the_reply(
    amqp_url: str,
    queue_name: str,
    make_smtp_server: Callable[..., FaultySMTPServer],
    engine_factory: Make,
    running: Start,
) -> None:
    server = make_smtp_server(
        faults=[
            Fault(
                "rcpt",
                reply="550 5.1.1 <nobody@example.com>: user unknown",
                recipient="^nobody",
            )
        ]
    )
    engine = await running(engine_factory(server.port))
    await publish_raw(amqp_url, queue_name, [dotnet_job(3, "nobody@example.com")])
    await wait_for_statuses(engine.db, {"dead": 1})
    row = await only_row(engine)
    assert row.attempts == 1 and row.last_code == 550
    assert "user unknown" in (row.last_error or "") and "no such mailbox" in (
        row.last_error or ""
    )
    assert server.received == []


async def test_malformed_json_goes_dead_with_the_raw_body_and_the_worker_goes_on(
    amqp_url: str,
    queue_name: str,
    smtp_server: FaultySMTPServer,
    engine_factory: Make,
    running: Start,
) -> None:
    engine = await running(engine_factory(smtp_server.port))
    junk = b'{"SenderEmail": "a@example.com", oops'
    await publish_raw(amqp_url, queue_name, [junk, b"\xff\xfe binary", dotnet_job(1)])
    seen = await wait_for_statuses(engine.db, {"dead": 2, "sent": 1})
    async with engine.db.read() as session:
        dead = (
            (
                await session.execute(
                    select(MessageRow)
                    .where(MessageRow.status == "dead")
                    .order_by(MessageRow.id)
                )
            )
            .scalars()
            .all()
        )
    assert {d.raw_body for d in dead} == {junk, b"\xff\xfe binary"}
    reasons = sorted(d.last_error or "" for d in dead)
    assert any("not valid JSON" in r for r in reasons), reasons
    assert any("UTF-8" in r for r in reasons), reasons
    assert len(seen) == 3 and len(smtp_server.received) == 1


async def test_partially_refused_recipients_are_retried_alone(
    amqp_url: str,
    queue_name: str,
    make_smtp_server: Callable[..., FaultySMTPServer],
    engine_factory: Make,
    running: Start,
) -> None:
    server = make_smtp_server(
        faults=[
            Fault("rcpt", reply="452 4.2.2 mailbox full", recipient="^carol", times=1)
        ]
    )
    engine = await running(engine_factory(server.port))
    job = {
        "from": "shop@example.com",
        "to": ["bob@example.com", "carol@example.com"],
        "subject": "s",
        "text": "t",
    }
    await publish_raw(amqp_url, queue_name, [json.dumps(job).encode()])
    await wait_for_statuses(engine.db, {"sent": 1})
    assert [r.recipients for r in server.received] == [
        ("bob@example.com",),
        ("carol@example.com",),
    ]
    row = await only_row(engine)
    assert row.rcpt_state == {"bob@example.com": "sent", "carol@example.com": "sent"}
    assert row.attempts == 2


async def test_the_same_job_published_twice_is_sent_once(
    amqp_url: str,
    queue_name: str,
    smtp_server: FaultySMTPServer,
    engine_factory: Make,
    running: Start,
) -> None:
    engine = await running(engine_factory(smtp_server.port))
    job = json.dumps(
        {
            "id": "welcome-77",
            "from": "a@example.com",
            "to": "b@example.com",
            "text": "hi",
        }
    ).encode()
    await publish_raw(amqp_url, queue_name, [job])
    await wait_for_statuses(engine.db, {"sent": 1})
    await publish_raw(amqp_url, queue_name, [job])
    await engine.run_until_idle()
    row = await only_row(engine)
    assert row.duplicates == 1 and len(smtp_server.received) == 1


async def test_a_future_send_at_waits_in_the_store(
    amqp_url: str,
    queue_name: str,
    smtp_server: FaultySMTPServer,
    engine_factory: Make,
    running: Start,
) -> None:
    engine = await running(engine_factory(smtp_server.port))
    from datetime import UTC, datetime, timedelta

    when = (datetime.now(UTC) + timedelta(seconds=1.5)).isoformat()
    job = {
        "from": "a@example.com",
        "to": "b@example.com",
        "text": "later",
        "send_at": when,
    }
    await publish_raw(amqp_url, queue_name, [json.dumps(job).encode()])
    await wait_for_statuses(engine.db, {"scheduled": 1})
    assert smtp_server.received == []
    await wait_for_statuses(engine.db, {"sent": 1}, timeout=10)
    assert len(smtp_server.received) == 1


async def test_relay_down_then_back_delivers_everything(
    amqp_url: str,
    queue_name: str,
    make_smtp_server: Callable[..., FaultySMTPServer],
    engine_factory: Make,
    running: Start,
) -> None:
    server = make_smtp_server()
    server.refuse = True
    engine = await running(engine_factory(server.port))
    await publish_raw(
        amqp_url, queue_name, [dotnet_job(n, f"u{n}@example.com") for n in range(20)]
    )

    async def some_retrying() -> bool:
        async with engine.db.read() as session:
            rows = (await session.execute(select(MessageRow.attempts))).scalars().all()
        return len(rows) == 20 and all(a >= 1 for a in rows)

    await wait_until(some_retrying, what="every message tried once")
    server.refuse = False
    await wait_for_statuses(engine.db, {"sent": 20})
    assert sorted(server.count_by_message_id().values()) == [1] * 20


async def test_the_engine_runs_on_every_store_backend(
    amqp_url: str,
    queue_name: str,
    store_url: str,
    make_smtp_server: Callable[..., FaultySMTPServer],
    engine_factory: Make,
    running: Start,
) -> None:
    server = make_smtp_server(
        faults=[
            Fault("data", reply="451 4.3.0 later", times=1),
            Fault("rcpt", reply="550 5.1.1 unknown", recipient="^gone"),
        ]
    )
    engine = await running(engine_factory(server.port, database_url=store_url))
    bodies = [dotnet_job(n, f"u{n}@example.com") for n in range(10)] + [
        dotnet_job(99, "gone@example.com")
    ]
    await publish_raw(amqp_url, queue_name, [*bodies, b"not json"])
    await wait_for_statuses(engine.db, {"sent": 10, "dead": 2})
    assert sorted(server.count_by_message_id().values()) == [1] * 10
