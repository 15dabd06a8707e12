"""A hand-written stand-in for ``Ops`` for widget tests (never MagicMock).

Holds messages in memory and answers the ops methods the console calls with the same
record types. Screens are tested against the real ``Ops`` (see conftest.py); this
fake is only for widget-level tests and for driving a screen into states the store
cannot easily reach (an error from ops, thousands of rows).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from mailconsole.engine.clock import FixedClock
from mailconsole.engine.errors import MailconsoleError, NotFound
from mailconsole.engine.events import Event, EventBus, OperatorActed
from mailconsole.engine.ops import (
    ActionReport,
    FailureGroup,
    Page,
    Plan,
    Preview,
    Stats,
)
from mailconsole.engine.store.dto import MessageDetail, MessageSummary

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def summary(n: int, status: str = "dead", **fields: Any) -> MessageSummary:
    base = MessageSummary(
        id=f"m-{n:04d}",
        status=status,
        sender="shop@example.com",
        recipients=(f"user{n}@example.com",),
        subject=f"Order {n} shipped",
        attempts=3,
        last_error="550 5.1.1 mailbox unavailable"
        if status == "dead"
        else "451 try later",
        last_code=550 if status == "dead" else 451,
        next_attempt_at=NOW + timedelta(minutes=5) if status == "scheduled" else None,
        created_at=NOW - timedelta(hours=2, minutes=n),
        updated_at=NOW - timedelta(minutes=n),
    )
    return replace(base, **fields)


class FakeOps:
    """In-memory ops: enough behaviour for widgets, no store, no broker."""

    def __init__(
        self, rows: Sequence[MessageSummary] = (), *, fail_with: str | None = None
    ) -> None:
        self.rows = list(rows)
        self.clock = FixedClock(NOW)
        self.bus = EventBus()
        self.calls: list[tuple[str, tuple[str, ...]]] = []
        self.fail_with = fail_with
        self.sent: list[Mapping[str, Any]] = []

    def _match(self, query: str) -> list[MessageSummary]:
        statuses = [
            t.split(":", 1)[1].split(",")
            for t in query.split()
            if t.startswith("status:")
        ]
        wanted = {s for group in statuses for s in group}
        return [r for r in self.rows if not wanted or r.status in wanted]

    async def list_messages(
        self, query: str = "", *, limit: int = 100, cursor: str | None = None
    ) -> Page:
        if self.fail_with:
            raise MailconsoleError(self.fail_with)
        rows = self._match(query)
        start = int(cursor or 0)
        end = start + limit
        return Page(tuple(rows[start:end]), str(end) if end < len(rows) else None)

    async def count(self, query: str = "") -> int:
        return len(self._match(query))

    async def show(self, message_id: str) -> MessageDetail:
        for row in self.rows:
            if row.id == message_id:
                return MessageDetail(
                    row,
                    None,
                    "extended",
                    {
                        "from": row.sender,
                        "to": list(row.recipients),
                        "subject": row.subject,
                        "text": "hello",
                    },
                    None,
                    {},
                    row.last_error,
                    None,
                    0,
                    (),
                    (),
                    (),
                )
        raise NotFound(f"no message {message_id}")

    async def stats(self) -> Stats:
        by_status: dict[str, int] = {}
        for row in self.rows:
            by_status[row.status] = by_status.get(row.status, 0) + 1
        return Stats(
            by_status, 3, 1, 1, 10, 100, 1, 5, 600.0, tuple(range(30)), (0,) * 29 + (1,)
        )

    async def failures(
        self, query: str = "status:dead", *, limit: int = 50
    ) -> list[FailureGroup]:
        dead = self._match(query)
        if not dead:
            return []
        return [
            FailureGroup(
                "abcd1234",
                550,
                "5.1.1",
                "mailbox unavailable",
                "example.com",
                len(dead),
                NOW - timedelta(hours=1),
                NOW,
                dead[0].id,
            )
        ]

    def events(self) -> AsyncIterator[Event]:
        return self.bus.subscribe()

    async def plan(self, action: str, query: str) -> Plan:
        return Plan(
            action, query, len(self._match(query)), (("example.com", 1),), (("550", 1),)
        )

    async def _act(self, action: str, ids: Sequence[str]) -> ActionReport:
        self.calls.append((action, tuple(ids)))
        self.bus.publish(OperatorActed(NOW, action, tuple(ids), len(ids)))
        return ActionReport(action, tuple(ids))

    async def replay(self, ids: Sequence[str] = (), **_: Any) -> ActionReport:
        return await self._act("replay", ids)

    async def retry_now(self, ids: Sequence[str], **_: Any) -> ActionReport:
        return await self._act("retry_now", ids)

    async def hold(self, ids: Sequence[str] = (), **_: Any) -> ActionReport:
        return await self._act("hold", ids)

    async def release(self, ids: Sequence[str] = (), **_: Any) -> ActionReport:
        return await self._act("release", ids)

    async def delete(self, ids: Sequence[str] = (), **_: Any) -> ActionReport:
        return await self._act("delete", ids)

    async def edit(self, message_id: str, job: Mapping[str, Any], **_: Any) -> str:
        self.calls.append(("edit", (message_id,)))
        return "m-9999"

    def validate(self, job: Mapping[str, Any]) -> list[str]:
        return [] if job.get("to") else ["to: at least one recipient is needed"]

    def preview(self, job: Mapping[str, Any]) -> Preview:
        return Preview(
            (("Subject", str(job.get("subject", ""))),), job.get("text"), None, 100
        )

    async def send(self, job: Mapping[str, Any]) -> str:
        self.sent.append(job)
        return "m-1000"
