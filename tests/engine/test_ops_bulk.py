"""Bulk replay with a live engine: every dead message delivered once, none twice.

2,000 here to keep the suite quick; ``bench/bulk_replay.py`` runs the issue's 10,000
and prints the time each phase took. No wall-clock asserts: only counts.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from sqlalchemy import func, select

from mailconsole.config import Settings
from mailconsole.engine.ops import Ops
from mailconsole.engine.runtime import Engine
from mailconsole.engine.store.db import Database
from mailconsole.engine.store.models import AuditRow
from tests.support.engine import wait_for_statuses
from tests.support.seed import many_dead
from tests.support.smtp_server import FaultySMTPServer

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(180)]

N = 2000


async def test_bulk_replay_of_dead_messages_delivers_each_exactly_once(
    smtp_server: FaultySMTPServer,
    engine_factory: Callable[..., Settings],
    running: Callable[[Settings], Awaitable[Engine]],
) -> None:
    # The bench's sizes rather than the small test defaults: thousands to send.
    settings = engine_factory(
        smtp_server.port, concurrency=32, prefetch=400, smtp={"pool_size": 8}
    )
    db = Database(settings.database_url.get_secret_value())
    await db.upgrade()
    ids = await many_dead(db, N)
    await db.dispose()
    engine = await running(settings)
    ops = await Ops.open(settings, actor="bulk")
    try:
        plan = await ops.plan("replay", "status:dead")
        assert (plan.count, plan.skipped_count) == (N, 0)
        assert len(plan.domains) == 10 and sum(n for _, n in plan.domains) == N
        assert plan.causes and plan.causes[0][1] == N // 10
        progress: list[tuple[int, int]] = []
        report = await ops.replay(
            query="status:dead",
            reason="bulk test",
            progress=lambda done, total: progress.append((done, total)),
        )
        assert len(report.done) == N and not report.skipped and not report.failed
        assert progress[-1] == (N, N)
        assert [d for d, _ in progress] == sorted(d for d, _ in progress)
        await wait_for_statuses(engine.db, {"sent": N}, timeout=150)
        await engine.run_until_idle(timeout=30)
        delivered = smtp_server.count_by_message_id()
        assert len(smtp_server.received) == N
        assert delivered == {f"<{i}@mailconsole.local>": 1 for i in ids}
        # A second run finds nothing left to replay.
        again = await ops.replay(query="status:dead")
        assert again.done == () and again.skipped == ()
        async with ops.db.read() as session:
            audited = await session.scalar(
                select(func.count())
                .select_from(AuditRow)
                .where(AuditRow.action == "replay")
            )
        assert audited == N + 2  # one per message, one summary per run
    finally:
        await ops.close()
