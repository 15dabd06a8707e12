"""Operator reads on SQLite, PostgreSQL and MariaDB: filters, pages, detail, stats,
failure groups. Seeded through the real delivery transitions (tests/support/seed.py)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, update

from mailconsole.engine.filters import parse
from mailconsole.engine.store.causes import group_key, normalise_reply
from mailconsole.engine.store.db import Database
from mailconsole.engine.store.models import MessageRow
from mailconsole.engine.store.queries import Queries
from mailconsole.engine.store.stats import read_stats
from tests.support.seed import NOW, seed


@pytest.fixture
async def db(store_url: str) -> AsyncIterator[Database]:
    database = Database(store_url)
    await database.upgrade()
    yield database
    await database.dispose()


async def ids_of(q: Queries, query: str, limit: int = 100) -> list[str]:
    items, _ = await q.page(await q.where(parse(query), NOW), limit, None)
    return [m.id for m in items]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ["m-0006", "m-0005", "m-0004", "m-0003", "m-0002", "m-0001"]),
        ("status:dead", ["m-0006", "m-0003"]),
        ("status:waiting", ["m-0005", "m-0004", "m-0002"]),
        ("to:@example.net", ["m-0006", "m-0005", "m-0002"]),
        ("domain:example.org", ["m-0003"]),
        ("to:ANN@example.com", ["m-0006", "m-0004", "m-0001"]),
        ("from:@example.com status:sent", ["m-0001"]),
        ("from:nobody@example.com", []),
        ("code:550", ["m-0006", "m-0003"]),
        ("code:4xx", ["m-0002"]),
        ("enhanced:4.7", ["m-0002"]),
        ("enhanced:5.1.1 to:@example.org", ["m-0003"]),
        ("greylisted", ["m-0002"]),  # last error
        ('"ORDER 4"', ["m-0004"]),  # a quoted phrase: the subject, any case
        # Bare words are separate terms, each found in any searched field: m-0002 has
        # "Order" in its subject and "4" in its last error (451 4.7.1 ...).
        ("ORDER 4", ["m-0004", "m-0002"]),
        ("m-0005", ["m-0005"]),  # id
        ("cy@example", ["m-0003"]),  # recipient text
        ("id:m-0001,m-0002", ["m-0002", "m-0001"]),
        ("since:5m", ["m-0006", "m-0005"]),
        ("until:7m", ["m-0003", "m-0002", "m-0001"]),
        ("until:2026-12-03T11:52:00Z", ["m-0002", "m-0001"]),
        ("dup:yes", []),
        ("dup:no status:sent", ["m-0001"]),
        ('"100%_"', []),  # LIKE wildcards are escaped, not interpreted
    ],
)
async def test_filters_select_the_right_messages_newest_first(
    db: Database, query: str, expected: list[str]
) -> None:
    await seed(db, "mixed")
    q = Queries(db)
    assert await ids_of(q, query) == expected
    assert await q.count(await q.where(parse(query), NOW)) == len(expected)


async def test_pages_walk_every_match_once_in_order(db: Database) -> None:
    ids = await seed(db, "many_dead(57)")
    q = Queries(db)
    clauses = await q.where(parse("status:dead"), NOW)
    seen: list[str] = []
    cursor: str | None = None
    while True:
        items, cursor = await q.page(clauses, 10, cursor)
        seen += [m.id for m in items]
        if cursor is None:
            break
    assert seen == list(reversed(ids))


async def test_messages_created_in_the_same_instant_page_by_id(db: Database) -> None:
    ids = await seed(db, "many_dead(7)")
    async with db.write() as session, session.begin():
        await session.execute(update(MessageRow).values(created_at=NOW))
    q = Queries(db)
    first, cursor = await q.page([], 4, None)
    second, end = await q.page([], 4, cursor)
    assert [m.id for m in first + second] == sorted(ids, reverse=True) and end is None


async def test_failure_groups_merge_what_only_differs_by_address(db: Database) -> None:
    await seed(db, "three_dead")
    q = Queries(db)
    groups = await q.failures(parse("status:dead"), NOW, 10)
    assert [(g.count, g.code, g.enhanced, g.domain) for g in groups] == [
        (2, 550, "5.1.1", "example.com"),
        (1, 552, "5.2.2", "example.org"),
    ]
    top = groups[0]
    assert top.reply == "<addr>: recipient address rejected: user unknown"
    assert top.example_id == "m-0003" and top.first_seen < top.last_seen
    assert await ids_of(q, f"group:{top.key}") == ["m-0003", "m-0001"]
    assert await ids_of(q, f"group:{top.key[:6]}") == ["m-0003", "m-0001"]
    assert await ids_of(q, f"group:{top.key} status:scheduled") == []
    assert await ids_of(q, "group:0123456789ab") == []


async def test_a_partly_accepted_message_fails_only_for_the_refused_domain(
    db: Database,
) -> None:
    await seed(db, "mixed")
    groups = await Queries(db).failures(parse("status:dead"), NOW, 10)
    assert sorted(g.domain for g in groups) == ["example.net", "example.org"]


async def test_detail_has_attempts_replies_and_the_edit_links(db: Database) -> None:
    await seed(db, "mixed")
    async with db.write() as session, session.begin():
        await session.execute(
            update(MessageRow)
            .where(MessageRow.id == "m-0005")
            .values(edited_from="m-0006")
        )
    q = Queries(db)
    detail = await q.detail("m-0006")
    assert detail is not None
    assert detail.rcpt_state == {
        "ann@example.com": "sent",
        "ben@example.net": "refused",
    }
    assert [a.code for a in detail.attempts] == [550]
    assert [r["code"] for r in detail.attempts[0].replies] == [250, 550]
    assert detail.edited_into == ("m-0005",)
    assert detail.payload is not None and detail.payload["subject"] == "Order 6 shipped"
    copy = await q.detail("m-0005")
    assert copy is not None and copy.summary.edited_from == "m-0006"
    assert await q.detail("m-nope") is None


async def test_stats_count_states_and_attempts_by_minute(db: Database) -> None:
    await seed(db, "mixed")
    stats = await read_stats(db, NOW)
    assert stats.by_status == {
        "queued": 1, "sending": 0, "scheduled": 1, "held": 1,
        "sent": 1, "dead": 2, "deleted": 0,
    }  # fmt: skip
    # attempts: sent at -9 min, failed at -8, -7 and -4 min
    assert (stats.sent_last_hour, stats.failed_last_hour) == (1, 3)
    assert (stats.sent_last_minute, stats.failed_last_minute) == (0, 0)
    assert len(stats.sent_per_minute) == 30
    assert stats.sent_per_minute[20] == 1
    assert [i for i, n in enumerate(stats.failed_per_minute) if n] == [21, 22, 25]
    assert stats.oldest_waiting == NOW - timedelta(minutes=8)
    later = await read_stats(db, NOW + timedelta(hours=2))
    assert (later.sent_last_hour, later.failed_last_hour) == (0, 0)


def test_reply_normalisation_keeps_the_meaning_and_drops_what_varies() -> None:
    a = normalise_reply(
        "550 5.1.1 <Bob@x.com>: Recipient address rejected: User unknown"
    )
    b = normalise_reply(
        "5.1.1 <carol@y.org>: Recipient address   rejected: User unknown"
    )
    assert a == b == "<addr>: recipient address rejected: user unknown"
    assert normalise_reply("452 4.2.2 quota 1048576 exceeded, id 4F2A1B9C") == (
        "quota <n> exceeded, id <id>"
    )
    assert group_key(550, "5.1.1", a, "x.com") != group_key(550, "5.1.1", a, "y.org")


PLAN_SEED = 2_000
"""Dead messages in the plan test's store: two pages of 50 even for one domain."""
# Lists that walk a created_at index newest first and stop at the end of the page.
# Only ties on created_at are then sorted by id ("USE TEMP B-TREE FOR RIGHT PART OF
# ORDER BY", streamed one created_at at a time); "USE TEMP B-TREE FOR ORDER BY" would
# be a sort of every match before the first row.
WALKS = [
    ("status:dead", "ix_messages_status_created"),
    ("status:dead code:550", "ix_messages_status_created"),
    ("status:dead to:@domain3.example", "ix_messages_status_created"),  # the console's
    ("code:550", "ix_messages_created"),
]
# Lists that start from the recipients index, fetch the messages by primary key and
# sort what they found: every message to that address or domain, so the cost is
# bounded by it and not by the store (a whole domain is sorted for each page).
LOOKUPS = [
    ("to:user77@domain7.example", "ix_recipients_address"),
    ("to:@domain3.example", "ix_recipients_domain"),
]
_TABLE_SCAN = re.compile(r"SCAN (TABLE )?\w+( AS \w+)?")  # a scan not USING an index


def _expected_newest_first(ids: list[str], query: str) -> list[str]:
    """The seed's matches (``many_dead``: message i goes to user<i>@domain<i % 10>)."""
    if "user77@" in query:
        return [ids[77]]
    if "domain3" in query:
        return [ids[i] for i in reversed(range(len(ids))) if i % 10 == 3]
    return list(reversed(ids))


async def _two_pages_and_their_plans(
    db: Database, query: str
) -> tuple[list[str], list[str], list[list[str]]]:
    """The first two pages of ``query`` and SQLite's plan of each SELECT they sent."""
    q = Queries(db)
    clauses = await q.where(parse(query), NOW)
    sent: list[tuple[str, Any]] = []

    def record(
        _conn: Any, _cursor: Any, statement: str, params: Any, _ctx: Any, _many: bool
    ) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            sent.append((statement, params))

    engine = db.read_engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        first, cursor = await q.page(clauses, 50, None)
        second = (await q.page(clauses, 50, cursor))[0] if cursor else []
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert len(sent) == (2 if cursor else 1)  # one statement a page
    plans = []
    async with db.read_engine.connect() as conn:
        for statement, params in sent:
            rows = await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", params)
            plans.append([str(row[-1]) for row in rows])
    return [m.id for m in first], [m.id for m in second], plans


def _assert_planned_on(plan: list[str], index: str, *, walk: bool) -> None:
    assert not [step for step in plan if _TABLE_SCAN.fullmatch(step)], plan
    assert any(
        re.search(rf"USING (COVERING )?INDEX {index}\b", step) for step in plan
    ), plan
    if walk:
        assert "USE TEMP B-TREE FOR ORDER BY" not in plan, plan  # the whole-list sort
    else:  # the messages found, fetched by primary key
        assert any("messages USING INDEX sqlite_autoindex" in s for s in plan), plan


@pytest.mark.parametrize(
    ("query", "index", "walk"),
    [(q, i, True) for q, i in WALKS] + [(q, i, False) for q, i in LOOKUPS],
)
async def test_pages_are_planned_on_an_index_whatever_the_store_size(
    tmp_path: Path, query: str, index: str, walk: bool
) -> None:
    """SQLite only: the SQL each page sends is planned on an index (see WALKS and
    LOOKUPS), and the pages hold the right rows.

    The plan, not a clock, is what keeps a page of 100,000 dead messages quick, and
    here it does not depend on the row count: the store never runs ``ANALYZE`` (see
    ``store/db.py``), and without ``sqlite_stat1`` SQLite plans from the schema alone,
    so these 2,000 rows get the plans 100,000 get (compared when this test was
    written). ``ANALYZE`` does change some of them, so the test first checks that the
    store has no statistics. How long the pages take is ``bench/dead_list.py``'s job.
    """
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/plans.db")
    await db.upgrade()
    try:
        ids = await seed(db, f"many_dead({PLAN_SEED})")
        async with db.read_engine.connect() as conn:
            stats = await conn.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE name LIKE 'sqlite_stat%'"
            )
            assert stats.all() == [], "the store has statistics: plan with them"
        first, second, plans = await _two_pages_and_their_plans(db, query)
        expected = _expected_newest_first(ids, query)
        assert (first, second) == (expected[:50], expected[50:100])
        for plan in plans:
            _assert_planned_on(plan, index, walk=walk)
    finally:
        await db.dispose()
