"""The operator commands in process (``mailconsole.cli.main``) against a seeded SQLite
store and the real RabbitMQ: output (text and ``--json``), exit codes, one-line
errors, states before and after, and the audit rows each command writes."""

from __future__ import annotations

import concurrent.futures
import getpass
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from sqlalchemy import func, select

from mailconsole.cli import main
from mailconsole.engine.broker import REF_HEADER
from mailconsole.engine.store.db import Database
from mailconsole.engine.store.models import AuditRow, MessageRow
from tests.support.seed import seed

pytestmark = pytest.mark.rabbitmq

LIST_FIELDS = {
    "id",
    "status",
    "attempts",
    "recipients",
    "subject",
    "last_error",
    "next_attempt_at",
    "created_at",
    "updated_at",
}


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class Store:
    """The seeded store, the queue and a way to run commands against both."""

    url: str
    amqp_url: str
    queue: str
    run: Callable[..., Result]

    async def status(self, message_id: str) -> str:
        return (await self.rows())[message_id]

    async def rows(self) -> dict[str, str]:
        db = Database(self.url)
        try:
            async with db.read() as session:
                got = await session.execute(select(MessageRow.id, MessageRow.status))
                return {i: s for i, s in got}
        finally:
            await db.dispose()

    async def audit(self) -> list[AuditRow]:
        db = Database(self.url)
        try:
            async with db.read() as session:
                stmt = select(AuditRow).order_by(AuditRow.id)
                return list((await session.execute(stmt)).scalars())
        finally:
            await db.dispose()

    async def audit_count(self) -> int:
        db = Database(self.url)
        try:
            async with db.read() as session:
                n = await session.scalar(select(func.count()).select_from(AuditRow))
                return int(n or 0)
        finally:
            await db.dispose()

    async def refs(self) -> list[str]:
        """Refs on the queue, taken off it."""
        got: list[str] = []
        connection = await aio_pika.connect(self.amqp_url)
        async with connection:
            channel = await connection.channel()
            q = await channel.declare_queue(self.queue, durable=True)
            while (message := await q.get(no_ack=True, fail=False)) is not None:
                ref = (message.headers or {}).get(REF_HEADER)
                got.append(ref.decode() if isinstance(ref, bytes) else str(ref))
        return got


async def _seeded(url: str, scenario: str) -> None:
    db = Database(url)
    await db.upgrade()
    try:
        await seed(db, scenario)
    finally:
        await db.dispose()


def run_main(argv: list[str]) -> int:
    # asyncio.run inside the CLI needs a thread without a running loop.
    # (tests/conftest.py gives the root logger back after each test)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        try:
            return pool.submit(main, argv).result()
        except SystemExit as exc:  # argparse's usage errors
            return int(exc.code or 0)


def _runner(
    url: str, amqp_url: str, queue: str, capsys: pytest.CaptureFixture[str]
) -> Callable[..., Result]:
    flags = ["--database-url", url, "--amqp-url", amqp_url, "--queue", queue]

    def run(*args: str) -> Result:
        capsys.readouterr()
        code = run_main([*flags, *args])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


@pytest.fixture
async def mixed(
    tmp_path: Path, amqp_url: str, queue_name: str, capsys: pytest.CaptureFixture[str]
) -> AsyncIterator[Store]:
    url = f"sqlite+aiosqlite:///{tmp_path}/store.db"
    await _seeded(url, "mixed")
    yield Store(url, amqp_url, queue_name, _runner(url, amqp_url, queue_name, capsys))


@pytest.fixture
async def three_dead(
    tmp_path: Path, amqp_url: str, queue_name: str, capsys: pytest.CaptureFixture[str]
) -> AsyncIterator[Store]:
    url = f"sqlite+aiosqlite:///{tmp_path}/store.db"
    await _seeded(url, "three_dead")
    yield Store(url, amqp_url, queue_name, _runner(url, amqp_url, queue_name, capsys))


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("mailconsole: ")
    return lines[0]


# -- reads -------------------------------------------------------------------------------
async def test_list_json_has_the_documented_fields_newest_first(mixed: Store) -> None:
    result = mixed.run("list", "--json")
    assert result.code == 0
    items = result.json
    assert [m["id"] for m in items] == [f"m-000{n}" for n in range(6, 0, -1)]
    for item in items:
        assert set(item) >= LIST_FIELDS
    m6 = items[0]
    assert m6["recipients"] == ["ann@example.com", "ben@example.net"]
    assert (m6["status"], m6["attempts"]) == ("dead", 1)
    assert m6["last_error"].startswith("message refused: 550")
    assert m6["created_at"] == "2026-12-03T11:56:00+00:00"


async def test_list_filters_from_flags_and_filter_text(mixed: Store) -> None:
    def ids(*args: str) -> list[str]:
        result = mixed.run("list", "--json", *args)
        assert result.code == 0, result.err
        return [m["id"] for m in result.json]

    assert ids("--status", "dead") == ["m-0006", "m-0003"]
    assert ids("status:dead", "to:@example.org") == ["m-0003"]
    assert ids("--to", "@example.net", "--search", "code:4xx") == ["m-0002"]
    assert ids("--search", '"order 5"') == ["m-0005"]
    assert ids("--status", "waiting", "--limit", "2") == ["m-0005", "m-0004"]
    text = mixed.run("list", "--status", "dead")
    assert text.code == 0 and "m-0006" in text.out and "Order 6 shipped" in text.out


async def test_a_bad_filter_is_a_usage_error_on_one_line(mixed: Store) -> None:
    result = mixed.run("list", "colour:red")
    assert result.code == 2 and result.out == ""
    assert "bad filter at column 1: unknown key 'colour'" in one_line(result.err)
    assert mixed.run("list", "--since", "yesterday").code == 2


async def test_show_json_has_attempts_replies_audit_and_edit_links(
    mixed: Store,
) -> None:
    assert mixed.run("replay", "m-0006", "--force", "--reason", "user fixed").code == 0
    job = mixed.run("show", "m-0006", "--json").json["payload"]
    path = Path(mixed.url.removeprefix("sqlite+aiosqlite:///")).parent / "fix.json"
    path.write_text(json.dumps({**job, "subject": "fixed"}))
    assert mixed.run("hold", "m-0005").code == 0
    held = mixed.run("show", "m-0005", "--json").json["payload"]
    path.write_text(json.dumps({**held, "subject": "fixed"}))
    edited = mixed.run("edit", "m-0005", "--json", str(path))
    assert edited.code == 0, edited.err
    new_id = edited.out.strip()

    detail = mixed.run("show", "m-0006", "--json").json
    assert detail["status"] == "queued"
    [attempt] = detail["attempt_history"]
    assert [(r["recipient"], r["code"]) for r in attempt["replies"]] == [
        ("ann@example.com", 250),
        ("ben@example.net", 550),
    ]
    [entry] = detail["audit"]
    assert (entry["actor"], entry["action"], entry["reason"]) == (
        getpass.getuser(),
        "replay",
        "user fixed",
    )
    assert detail["rendered"]["headers"]
    assert ["Message-ID", "<m-0006@mailconsole.local>"] in detail["rendered"]["headers"]
    assert mixed.run("show", "m-0005", "--json").json["edited_into"] == [new_id]
    copy = mixed.run("show", new_id, "--json").json
    assert copy["edited_from"] == "m-0005" and copy["subject"] == "fixed"

    text = mixed.run("show", "m-0005").out
    assert f"edited into  {new_id}" in text
    assert "edited from  m-0005" in mixed.run("show", new_id).out
    text6 = mixed.run("show", "m-0006").out
    assert "ben@example.net: 550 5.1.1" in text6 and '"user fixed"' in text6


async def test_show_of_an_unknown_id_fails_on_one_line(mixed: Store) -> None:
    result = mixed.run("show", "m-nope")
    assert result.code == 1
    assert one_line(result.err) == "mailconsole: no message m-nope"


async def test_stats_json(mixed: Store) -> None:
    result = mixed.run("stats", "--json")
    assert result.code == 0
    stats = result.json
    assert stats["by_status"] == {
        "queued": 1, "sending": 0, "scheduled": 1, "held": 1,
        "sent": 1, "dead": 2, "deleted": 0,
    }  # fmt: skip
    assert stats["queue"]["ready"] == 0 and stats["queue"]["consumers"] == 0
    assert set(stats["sent"]) == set(stats["failed"]) == {"last_minute", "last_hour"}
    assert stats["oldest_waiting_age"] > 0
    assert len(stats["sent_per_minute"]) == 30
    assert "oldest waiting" in mixed.run("stats").out


async def test_failures_are_grouped_largest_first(three_dead: Store) -> None:
    result = three_dead.run("failures", "--json")
    assert result.code == 0
    groups = result.json
    assert [(g["count"], g["code"], g["domain"]) for g in groups] == [
        (2, 550, "example.com"),
        (1, 552, "example.org"),
    ]
    top = groups[0]
    assert top["reply"] == "<addr>: recipient address rejected: user unknown"
    assert top["example_id"] == "m-0003" and top["first_seen"] < top["last_seen"]
    # A group key is a filter: replay just that broken thing.
    listed = three_dead.run("list", "--json", f"group:{top['key']}").json
    assert [m["id"] for m in listed] == ["m-0003", "m-0001"]
    text = three_dead.run("failures").out
    assert text.index("example.com") < text.index("example.org")
    assert three_dead.run("failures", "--status", "scheduled").out == "no failures\n"


# -- replay and friends --------------------------------------------------------------------
async def test_replay_by_id_queues_audits_and_publishes(mixed: Store) -> None:
    result = mixed.run("replay", "m-0003", "--reason", "relay fixed")
    assert result.code == 0 and result.err == ""
    assert result.out == "replayed 1, skipped 0, failed 0\n"
    assert await mixed.status("m-0003") == "queued"
    assert await mixed.refs() == ["m-0003"]
    [entry] = await mixed.audit()
    assert (entry.actor, entry.action, entry.message_id, entry.reason) == (
        getpass.getuser(),
        "replay",
        "m-0003",
        "relay fixed",
    )
    assert entry.details["force"] is False and entry.details["from"] == "dead"


async def test_replay_refuses_accepted_recipients_without_force(mixed: Store) -> None:
    refused = mixed.run("replay", "m-0006")
    assert refused.code == 1
    assert one_line(refused.err) == (
        "mailconsole: m-0006 skipped: the relay already accepted it for 1 of 2 "
        "recipients; use --force to retry the others"
    )
    assert await mixed.status("m-0006") == "dead" and await mixed.audit_count() == 0
    forced = mixed.run("replay", "m-0006", "--force", "--json")
    assert forced.code == 0
    assert forced.json == {
        "action": "replay",
        "dry_run": False,
        "done": ["m-0006"],
        "skipped": [],
        "failed": [],
    }
    assert await mixed.status("m-0006") == "queued"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("replay", "m-nope"), "mailconsole: m-nope skipped: not found"),
        (
            ("replay", "m-0005"),
            "mailconsole: m-0005 skipped: cannot replay: it is queued already",
        ),
        (("hold", "m-0001"), "mailconsole: m-0001 skipped: cannot hold: it was sent"),
        (
            ("release", "m-0003"),
            "mailconsole: m-0003 skipped: cannot release: it is dead; it is not held",
        ),
        (
            ("retry-now", "m-0004"),
            "mailconsole: m-0004 skipped: cannot retry now: it is held (release it "
            "first)",
        ),
        (
            ("delete", "m-0001"),
            "mailconsole: m-0001 skipped: cannot delete: it was sent",
        ),
    ],
)
async def test_a_wrong_state_or_unknown_id_exits_1_saying_which(
    mixed: Store, args: tuple[str, ...], message: str
) -> None:
    before = await mixed.rows()
    result = mixed.run(*args)
    assert result.code == 1
    assert one_line(result.err) == message
    assert await mixed.rows() == before and await mixed.audit_count() == 0


@pytest.mark.parametrize(
    "args",
    [
        ("replay",),  # neither ids nor --all
        ("replay", "m-0003", "--all"),
        ("hold", "m-0003", "--status", "dead"),  # ids or a filter, not both
        ("delete", "--all"),  # delete --all wants a filter
        ("replay", "--all", "--search", 'text:"open'),
        ("replay", "--all", "--rate", "fast"),  # argparse's own errors from here
        ("frobnicate",),
    ],
)
async def test_usage_errors_exit_2_and_change_nothing(
    mixed: Store, args: tuple[str, ...]
) -> None:
    before = await mixed.rows()
    result = mixed.run(*args)
    assert result.code == 2
    last = result.err.strip().splitlines()[-1]
    assert last.startswith("mailconsole: ") or "error:" in last
    assert await mixed.rows() == before and await mixed.audit_count() == 0


async def test_a_bulk_action_asks_unless_yes_and_off_a_terminal_refuses(
    mixed: Store,
) -> None:
    refused = mixed.run("replay", "--all")
    assert refused.code == 2
    assert "plan: replay 1 messages matching 'status:dead'" in refused.err
    assert "would skip 1" in refused.err and "m-0006" in refused.err
    assert refused.err.strip().splitlines()[-1] == (
        "mailconsole: not a terminal, so not asking: add --yes to go ahead"
    )
    assert await mixed.status("m-0003") == "dead" and await mixed.audit_count() == 0

    done = mixed.run("replay", "--all", "--yes", "--reason", "relay back")
    assert done.code == 0
    assert done.out == "replayed 1, skipped 1, failed 0\n"
    assert await mixed.status("m-0003") == "queued"
    summary = [a for a in await mixed.audit() if a.message_id is None]
    assert [(a.action, a.filter, a.count, a.reason) for a in summary] == [
        ("replay", "status:dead", 1, "relay back")
    ]


async def test_dry_run_shows_the_plan_and_changes_nothing(mixed: Store) -> None:
    before = await mixed.rows()
    for args in (
        ("replay", "--all", "--dry-run"),
        ("replay", "m-0003", "--dry-run"),
        ("delete", "--all", "--status", "dead", "--older-than", "1m", "--dry-run"),
        ("hold", "m-0005", "--dry-run"),
        ("suppress", "add", "ann@example.com", "--dry-run"),
    ):
        result = mixed.run(*args)
        assert result.code == 0, (args, result.err)
    assert mixed.run("replay", "--all", "--dry-run").out == (
        "would be replayed 1, skipped 1, failed 0\n"
    )
    assert await mixed.rows() == before and await mixed.audit_count() == 0
    assert await mixed.refs() == []
    assert mixed.run("suppress", "list", "--json").json == []


async def test_hold_release_retry_now_by_id(mixed: Store) -> None:
    assert mixed.run("hold", "m-0005", "m-0002", "--reason", "checking").code == 0
    assert await mixed.status("m-0005") == await mixed.status("m-0002") == "held"
    released = mixed.run("release", "--all", "--yes", "--json")
    assert released.code == 0
    assert sorted(released.json["done"]) == ["m-0002", "m-0004", "m-0005"]
    rows = await mixed.rows()
    assert (rows["m-0002"], rows["m-0004"], rows["m-0005"]) == (
        "scheduled",
        "queued",
        "queued",
    )
    assert sorted(await mixed.refs()) == ["m-0004", "m-0005"]
    assert mixed.run("retry-now", "m-0002").out == "made due 1, skipped 0, failed 0\n"
    actions = [(a.action, a.message_id) for a in await mixed.audit()]
    assert ("hold", "m-0005") in actions and ("retry-now", "m-0002") in actions


async def test_delete_dead_older_than(mixed: Store) -> None:
    # m-0003 died 7 minutes before the seed's "now", m-0006 4 minutes before; the
    # real clock is later still, so both are older than a minute.
    result = mixed.run(
        "delete", "--all", "--status", "dead", "--older-than", "1m", "--yes"
    )
    assert result.code == 0 and result.out == "deleted 2, skipped 0, failed 0\n"
    rows = await mixed.rows()
    assert (rows["m-0003"], rows["m-0006"]) == ("deleted", "deleted")
    assert rows["m-0005"] == "queued"  # not dead: untouched
    summary = [a for a in await mixed.audit() if a.message_id is None]
    assert [(a.filter, a.count) for a in summary] == [("until:1m status:dead", 2)]
    # As the issue writes it: filter flags select without --all.
    nothing = mixed.run("delete", "--status", "dead", "--older-than", "1m", "--yes")
    assert nothing.code == 0 and "nothing to delete" in nothing.err


# -- suppressions and transfer -----------------------------------------------------------
async def test_suppress_add_list_remove(mixed: Store) -> None:
    added = mixed.run("suppress", "add", "Ann@Example.com", "--reason", "complaint")
    assert added.code == 0 and added.out == "suppressed: Ann@Example.com\n"
    again = mixed.run("suppress", "add", "ann@example.com")
    assert again.code == 0 and again.out.startswith("already suppressed")
    listed = mixed.run("suppress", "list", "--json").json
    assert [(e["address"], e["reason"]) for e in listed] == [
        ("ann@example.com", "complaint")
    ]
    assert "ann@example.com" in mixed.run("suppress", "list", "ann").out
    removed = mixed.run("suppress", "remove", "ann@example.com", "--reason", "ok")
    assert removed.code == 0
    missing = mixed.run("suppress", "remove", "ann@example.com")
    assert missing.code == 1
    assert one_line(missing.err) == (
        "mailconsole: ann@example.com is not on the suppression list"
    )
    bad = mixed.run("suppress", "add", "not-an-address")
    assert bad.code == 1 and one_line(bad.err)
    audit = [(a.action, a.reason, a.actor) for a in await mixed.audit()]
    user = getpass.getuser()
    assert audit == [("suppress", "complaint", user), ("unsuppress", "ok", user)]


async def test_export_then_import_round_trip(mixed: Store, tmp_path: Path) -> None:
    out = tmp_path / "dead.jsonl"
    exported = mixed.run("export", "-o", str(out), "--reason", "move")
    assert exported.code == 0 and exported.err == "exported 2 messages\n"
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["meta"]["id"] for r in lines] == ["m-0003", "m-0006"]
    assert lines[1]["meta"]["rcpt_state"] == {
        "ann@example.com": "sent",
        "ben@example.net": "refused",
    }
    assert mixed.run("export").out.count("\n") == 2  # to stdout as well

    refused = mixed.run("import", str(out))
    assert refused.code == 2 and "add --yes" in refused.err
    dry = mixed.run("import", str(out), "--dry-run")
    assert dry.code == 0 and dry.out == "would import 2\n"
    imported = mixed.run("import", str(out), "--yes", "--json", "--reason", "move")
    assert imported.code == 0
    ids = imported.json["imported"]
    assert len(ids) == 2 and not set(ids) & {"m-0003", "m-0006"}

    connection = await aio_pika.connect(mixed.amqp_url)
    async with connection:
        channel = await connection.channel()
        q = await channel.declare_queue(mixed.queue, durable=True)
        bodies = []
        while (message := await q.get(no_ack=True, fail=False)) is not None:
            bodies.append(json.loads(message.body))
    assert [b["id"] for b in bodies] == ids
    assert [b["to"] for b in bodies] == [
        ["cy@example.org"],
        ["ann@example.com", "ben@example.net"],
    ]
    actions = [(a.action, a.count) for a in await mixed.audit()]
    assert actions == [("export", 2), ("export", 2), ("import", 2)]


async def test_an_invalid_import_publishes_nothing(
    mixed: Store, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.jsonl"
    good = {"from": "a@example.com", "to": "b@example.com", "text": "x"}
    bad.write_text(
        json.dumps(good) + "\n" + json.dumps({**good, "to": "nobody"}) + "\nnot json\n"
    )
    result = mixed.run("import", str(bad), "--yes")
    assert result.code == 1
    assert result.err.strip().splitlines()[-1] == (
        "mailconsole: 2 invalid; nothing imported"
    )
    assert "line 3: not JSON" in result.err
    assert await mixed.refs() == [] and await mixed.audit_count() == 0
    missing = mixed.run("import", str(tmp_path / "nope.jsonl"))
    assert missing.code == 2 and one_line(missing.err)


async def test_a_filter_outside_the_actions_states_selects_nothing(
    mixed: Store,
) -> None:
    before = await mixed.rows()
    result = mixed.run("hold", "--status", "sent", "--yes")
    assert result.code == 0
    assert "plan: hold 0 messages matching 'status:sent'" in result.err
    assert "nothing to hold" in result.err and "would skip" not in result.err
    assert await mixed.rows() == before and await mixed.audit_count() == 0


def test_an_unreachable_store_is_one_line_exit_1_with_the_password_masked(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = "postgresql+asyncpg://ops:secret@127.0.0.1:1/mail"
    assert run_main(["--database-url", url, "list"]) == 1
    err = capsys.readouterr().err
    assert one_line(err).startswith(
        "mailconsole: the store is not reachable at "
        "postgresql+asyncpg://ops:********@127.0.0.1:1/mail: "
    )
    assert "secret" not in err
