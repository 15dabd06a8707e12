"""Store statistics for ``stats`` and the console: counts by status, the oldest waiting
message, and sent/failed attempts per minute over the last half hour.

Read-only, a handful of index range scans however large the store; it never writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, select

from mailconsole.engine.store.db import Database
from mailconsole.engine.store.dto import Status
from mailconsole.engine.store.models import AttemptRow, MessageRow

SENT_OUTCOMES = ("sent", "partial")
"""Attempts that handed the message to the relay (for some recipients at least)."""
BUCKETS = 30
"""Minutes in the per-minute series (the console's sparkline)."""


@dataclass(frozen=True, slots=True)
class StoreStats:
    by_status: dict[str, int]
    sent_last_minute: int
    sent_last_hour: int
    failed_last_minute: int
    failed_last_hour: int
    oldest_waiting: datetime | None
    sent_per_minute: tuple[int, ...]
    failed_per_minute: tuple[int, ...]


async def read_stats(db: Database, now: datetime) -> StoreStats:
    """Counts by status, the oldest waiting message, sent/failed attempts by minute."""
    by_status = select(MessageRow.status, func.count()).group_by(MessageRow.status)
    waiting = MessageRow.status.in_((Status.QUEUED, Status.SCHEDULED))
    async with db.read() as session:
        # Rows unpack as tuples (Result.tuples() is deprecated in SQLAlchemy 2.1).
        counts = {s: n for s, n in (await session.execute(by_status)).all()}
        oldest = await session.scalar(
            select(func.min(MessageRow.created_at)).where(waiting)
        )
        sums = (await session.execute(_attempt_sums(now))).one()
    values = [int(v or 0) for v in sums]
    sent, failed = values[:BUCKETS], values[BUCKETS : 2 * BUCKETS]
    sent_h, failed_h = values[2 * BUCKETS], values[2 * BUCKETS + 1]
    return StoreStats(
        by_status={str(s): int(counts.get(str(s), 0)) for s in Status},
        sent_last_minute=sent[-1],
        sent_last_hour=sent_h,
        failed_last_minute=failed[-1],
        failed_last_hour=failed_h,
        oldest_waiting=oldest,
        sent_per_minute=tuple(sent),
        failed_per_minute=tuple(failed),
    )


def _attempt_sums(now: datetime) -> Any:
    """One pass over the last hour of attempts: per-minute sent and failed counts for
    the last 30 minutes, then the hour's totals (portable CASE sums, no date maths)."""
    sent = AttemptRow.outcome.in_(SENT_OUTCOMES)
    columns = []
    for is_sent in (True, False):
        kind = sent if is_sent else ~sent
        for n in range(BUCKETS):
            start = now - timedelta(minutes=BUCKETS - n)
            hit = and_(kind, AttemptRow.started_at > start)
            if n < BUCKETS - 1:
                # The newest bucket is open-ended: another worker's clock may run ahead.
                hit = and_(hit, AttemptRow.started_at <= start + timedelta(minutes=1))
            columns.append(func.sum(case((hit, 1), else_=0)))
    columns.append(func.sum(case((sent, 1), else_=0)))
    columns.append(func.sum(case((~sent, 1), else_=0)))
    return select(*columns).where(AttemptRow.started_at > now - timedelta(hours=1))
