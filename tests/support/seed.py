"""Deterministic stores for tests and UI snapshots: ``await seed(db, "three_dead")``.

Small scenarios go through the real delivery transitions (``DeliveryStore.ingest``
and ``record_results``), so their rows look exactly like the engine's; the bulk one
(``many_dead(n)``) inserts with Core ``executemany`` (messages, recipients, failure
causes) because 100,000 rows through the transitions would take minutes. Same ids,
times and texts on every run, all relative to :data:`NOW`. Scenarios:

* ``three_dead``: m-0001..m-0003 dead, m-0001 and m-0003 with the same cause
  (550 5.1.1 user unknown @ example.com), m-0002 mailbox full @ example.org.
* ``mixed``: m-0001 sent, m-0002 scheduled (451 greylisted), m-0003 dead,
  m-0004 held (from queued), m-0005 queued, m-0006 dead after the relay accepted
  one of its two recipients (replaying it needs ``force``).
* ``many_dead(n)``: m-0000001.. dead, 550 5.1.1 user unknown, one recipient each
  at one of ten domains, one second apart.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, update

from mailconsole.engine.store.cause_index import cause_rows_of
from mailconsole.engine.store.db import Database
from mailconsole.engine.store.delivery import DeliveryStore, NewMessage, Result
from mailconsole.engine.store.dto import Status
from mailconsole.engine.store.models import CauseRow, MessageRow, RecipientRow

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
SEED_WORKER = "seed-worker"
USER_UNKNOWN = (
    550,
    "5.1.1",
    "5.1.1 <{rcpt}>: Recipient address rejected: User unknown",
)
MAILBOX_FULL = (552, "5.2.2", "5.2.2 <{rcpt}>: Mailbox full, quota 1048576 exceeded")
GREYLISTED = (451, "4.7.1", "4.7.1 Greylisted, try again in 300 seconds")


def job(n: int, *recipients: str, subject: str | None = None) -> dict[str, Any]:
    """The extended job of seeded message ``n``."""
    return {
        "id": f"m-{n:04d}",
        "from": "Shop <shop@example.com>",
        "to": list(recipients),
        "subject": subject or f"Order {n} shipped",
        "text": f"Your order {n} is on its way.",
    }


def new_message(
    n: int, *recipients: str, status: Status = Status.SENDING, **kw: Any
) -> NewMessage:
    data = job(n, *recipients)
    fields: dict[str, Any] = {
        "id": data["id"],
        "status": status,
        "source_format": "extended",
        "payload": json.dumps(data, separators=(",", ":")),
        "raw_body": None,
        "idempotency_key": data["id"],
        "sender": "shop@example.com",
        "recipients": tuple(recipients),
        "rcpt_state": dict.fromkeys(recipients, "pending"),
        "subject": data["subject"],
    }
    fields.update(kw)
    return NewMessage(**fields)


def result(
    message_id: str,
    status: Status,
    rcpt_state: dict[str, str],
    reply: tuple[int, str, str] | None,
    *,
    at: datetime,
    next_attempt_at: datetime | None = None,
) -> Result:
    """One attempt's outcome: ``reply`` refused the pending recipients (None: sent)."""
    refused = [r for r, s in rcpt_state.items() if s != "sent"]
    code, enhanced, text = reply or (250, None, "2.0.0 Ok: queued as 4F2A1B")
    text = text.format(rcpt=refused[0] if refused else "")
    sent = reply is None
    replies = [
        {
            "recipient": r,
            "code": 250 if s == "sent" else code,
            "enhanced": enhanced,
            "text": "ok" if s == "sent" else text,
        }
        for r, s in rcpt_state.items()
    ]
    attempt = {
        "number": 1,
        "started_at": at,
        "duration_ms": 12,
        "worker_id": SEED_WORKER,
        "outcome": "sent" if sent else ("transient" if code < 500 else "permanent"),
        "stage": "data" if sent else "rcpt",
        "code": code,
        "enhanced": enhanced,
        "reply": text,
        "replies": replies,
    }
    error = None if sent else f"message refused: {code} {text}"
    return Result(
        message_id,
        status,
        1,
        rcpt_state,
        next_attempt_at,
        error,
        None if sent else code,
        enhanced,
        text,
        False,
        sent,
        attempt,
    )


async def seed(db: Database, scenario: str) -> list[str]:
    """Fill an upgraded, empty store; returns the ids created, oldest first."""
    many = re.fullmatch(r"many_dead\((\d+)\)", scenario)
    if many:
        return await many_dead(db, int(many.group(1)))
    builders = {"three_dead": _three_dead, "mixed": _mixed}
    if scenario not in builders:
        raise ValueError(f"unknown seed scenario {scenario!r}")
    return await builders[scenario](db)


async def _three_dead(db: Database) -> list[str]:
    store = DeliveryStore(db, SEED_WORKER)
    causes = [
        ("bob@example.com", USER_UNKNOWN),
        ("carol@example.org", MAILBOX_FULL),
        ("dave@example.com", USER_UNKNOWN),
    ]
    ids = []
    for n, (rcpt, cause) in enumerate(causes, start=1):
        at = NOW - timedelta(minutes=10 - n)
        message = new_message(n, rcpt)
        await store.ingest([message], at)
        state = {rcpt: "refused"}
        await store.record_results(
            [result(message.id, Status.DEAD, state, cause, at=at)], at
        )
        ids.append(message.id)
    return ids


async def _mixed(db: Database) -> list[str]:
    store = DeliveryStore(db, SEED_WORKER)
    at = [NOW - timedelta(minutes=10 - n) for n in range(7)]
    a, b = "ann@example.com", "ben@example.net"
    await store.ingest([new_message(1, a)], at[1])
    await store.record_results(
        [result("m-0001", Status.SENT, {a: "sent"}, None, at=at[1])], at[1]
    )
    await store.ingest([new_message(2, b)], at[2])
    due = NOW + timedelta(minutes=5)
    await store.record_results(
        [
            result(
                "m-0002",
                Status.SCHEDULED,
                {b: "pending"},
                GREYLISTED,
                at=at[2],
                next_attempt_at=due,
            )
        ],
        at[2],
    )
    await store.ingest([new_message(3, "cy@example.org")], at[3])
    state3 = {"cy@example.org": "refused"}
    await store.record_results(
        [result("m-0003", Status.DEAD, state3, USER_UNKNOWN, at=at[3])], at[3]
    )
    await store.ingest([new_message(4, a, status=Status.QUEUED)], at[4])
    await store.ingest([new_message(5, b, status=Status.QUEUED)], at[5])
    await store.ingest([new_message(6, a, b)], at[6])
    state6 = {a: "sent", b: "refused"}
    await store.record_results(
        [result("m-0006", Status.DEAD, state6, USER_UNKNOWN, at=at[6])], at[6]
    )
    async with db.write() as session, session.begin():
        await session.execute(
            update(MessageRow)
            .where(MessageRow.id == "m-0004")
            .values(status=Status.HELD, held_from=Status.QUEUED)
        )
    return [f"m-{n:04d}" for n in range(1, 7)]


async def many_dead(db: Database, n: int, *, chunk: int = 5000) -> list[str]:
    """``n`` dead messages by Core executemany (100,000 in a few seconds)."""
    ids = [f"m-{i:07d}" for i in range(1, n + 1)]
    start = NOW - timedelta(seconds=n + 60)
    for offset in range(0, n, chunk):
        rows, rcpts = [], []
        for i in range(offset, min(n, offset + chunk)):
            rcpt = f"user{i}@domain{i % 10}.example"
            at = start + timedelta(seconds=i)
            text = USER_UNKNOWN[2].format(rcpt=rcpt)
            data = {
                "id": ids[i],
                "from": "shop@example.com",
                "to": [rcpt],
                "subject": f"Order {i}",
                "text": f"Order {i} shipped.",
            }
            rows.append(_dead_row(ids[i], data, rcpt, text, at))
            rcpts.append(
                {
                    "message_id": ids[i],
                    "address": rcpt,
                    "domain": rcpt.rpartition("@")[2],
                }
            )
        causes = [cause for r in rows for cause in cause_rows_of(r)]
        async with db.write() as session, session.begin():
            await session.execute(insert(MessageRow), rows)
            await session.execute(insert(RecipientRow), rcpts)
            await session.execute(insert(CauseRow), causes)
    return ids


def _dead_row(
    message_id: str, data: dict[str, Any], rcpt: str, text: str, at: datetime
) -> dict[str, Any]:
    return {
        "id": message_id,
        "idempotency_key": message_id,
        "status": Status.DEAD,
        "source_format": "extended",
        "payload": json.dumps(data),
        "raw_body": None,
        "body_sha256": None,
        "sender": "shop@example.com",
        "recipients": rcpt,
        "rcpt_state": {rcpt: "refused"},
        "subject": data["subject"],
        "priority": 0,
        "attempts": 1,
        "next_attempt_at": None,
        "last_error": f"message refused: 550 {text}",
        "last_code": 550,
        "last_enhanced": "5.1.1",
        "last_reply": text,
        "worker_id": None,
        "possible_duplicate": False,
        "duplicates": 0,
        "created_at": at,
        "updated_at": at,
        "first_attempt_at": at,
    }
