"""Scheduled and Dead against the real ops over a seeded store (no engine, fixed clock)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from textual.message import Message

from mailconsole.app import MailConsoleApp
from mailconsole.engine.broker import Broker
from mailconsole.engine.ops import ActionReport
from mailconsole.screens.bulk import BATCH, BulkModal
from mailconsole.screens.dead import DeadScreen
from mailconsole.screens.retries import RetriesScreen
from mailconsole.widgets.failure_table import FailureTable
from mailconsole.widgets.message_table import MessageTable
from tests.support.seed import NOW
from tests.ui.conftest import acted, screen_text, settle, type_text

MakeApp = Callable[..., MailConsoleApp]


async def status_of(app: MailConsoleApp, message_id: str) -> str:
    return (await app.ctx.ops.show(message_id)).summary.status


def shown_ids(app: MailConsoleApp) -> list[str]:
    return [row.id for row in app.screen.query_one(MessageTable).rows_loaded]


async def test_dead_lists_newest_first_with_reason(make_app: MakeApp) -> None:
    app = make_app("three_dead")
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.press("d")
        await settle(pilot)
        assert isinstance(app.screen, DeadScreen)
        assert shown_ids(app) == ["m-0003", "m-0002", "m-0001"]
        text = screen_text(app)
        assert "Dead letters  3 matching" in text
        assert "552 5.2.2 <carol@example.org>: Mailbox full" in text


async def test_replay_requeues_the_selected_message(
    make_app: MakeApp, ui_broker: Broker
) -> None:
    app, seen = make_app("three_dead", broker=ui_broker), list[Message]()
    async with app.run_test(size=(120, 36), message_hook=seen.append) as pilot:
        await pilot.press("d", "down", "r")
        await settle(pilot)
        await pilot.pause(0.3)  # one event flush
        assert await status_of(app, "m-0002") == "queued"
        assert ("replay", ("m-0002",)) in acted(seen)
        assert "m-0002" not in shown_ids(app)


async def test_replay_without_a_broker_says_it_is_queued_but_not_published(
    make_app: MakeApp,
) -> None:
    app = make_app("three_dead")
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.press("d", "down", "r")
        await settle(pilot)
        assert await status_of(app, "m-0002") == "queued"
        notes = " ".join(str(n.message) for n in app._notifications)
        assert "queued, but not published" in notes
        assert app.is_running


async def test_filter_as_you_type_uses_the_cli_language(make_app: MakeApp) -> None:
    app = make_app("three_dead")
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.press("d", "slash")
        await type_text(pilot, "to:@example.org")
        await pilot.pause(0.3)
        await settle(pilot)
        assert shown_ids(app) == ["m-0002"]
        assert "1 matching" in screen_text(app)
        await pilot.press("escape")  # clears the filter
        await pilot.pause(0.3)
        await settle(pilot)
        assert len(shown_ids(app)) == 3


async def test_a_bad_filter_is_explained_in_place(make_app: MakeApp) -> None:
    app = make_app("three_dead")
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.press("d", "slash")
        await type_text(pilot, "code:abc")
        await pilot.pause(0.3)
        await settle(pilot)
        assert "bad filter" in screen_text(app)
        assert app.is_running


async def test_group_by_cause_largest_first_then_narrow(make_app: MakeApp) -> None:
    app = make_app("three_dead")
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.press("d", "g")
        await settle(pilot)
        groups = app.screen.query_one(FailureTable).groups
        assert [g.count for g in groups] == [2, 1]
        await pilot.press("enter")
        await pilot.pause(0.3)
        await settle(pilot)
        assert shown_ids(app) == ["m-0003", "m-0001"]
        assert f"group:{groups[0].key}" in screen_text(app)


async def test_bulk_replay_plans_confirms_and_reports(
    make_app: MakeApp, ui_broker: Broker
) -> None:
    app = make_app("three_dead", broker=ui_broker)
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.press("d", "R")
        await settle(pilot)
        assert isinstance(app.screen, BulkModal)
        assert "Replay 3 dead messages" in screen_text(app)
        await pilot.press("y")
        await settle(pilot)
        assert "finished: 3 of 3 done" in screen_text(app)
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(app.screen, DeadScreen)
        assert [await status_of(app, f"m-000{n}") for n in (1, 2, 3)] == ["queued"] * 3


async def test_bulk_delete_can_be_paused_and_cancelled(
    make_app: MakeApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app("many_dead(1000)")
    # SQLite deletes 1,000 rows faster than a key press is processed, so the test
    # holds the first batch at a gate (the real delete runs once it opens) and
    # presses pause while that batch is in flight.
    gate = asyncio.Event()
    real_delete = app.ctx.ops.delete

    async def gated_delete(ids: Sequence[str], **kw: Any) -> ActionReport:
        await gate.wait()
        return await real_delete(ids, **kw)

    monkeypatch.setattr(app.ctx.ops, "delete", gated_delete)
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.press("d", "X")
        await settle(pilot)
        assert "Delete 1,000 dead messages" in screen_text(app)
        modal = app.screen
        assert isinstance(modal, BulkModal)
        await pilot.press("y", "p")
        assert modal.phase == "running"
        assert "paused" in screen_text(app)
        gate.set()  # the batch in flight finishes; the next one waits for resume
        await settle(pilot)
        assert modal.phase == "running" and modal.done == BATCH
        assert await app.ctx.ops.count("status:deleted") == BATCH
        await pilot.press("escape")  # cancel: what was done stays done
        await settle(pilot)
        assert modal.phase == "done"
        assert f"cancelled: {BATCH} of 1,000 done" in screen_text(app)
        assert await app.ctx.ops.count("status:deleted") == BATCH
        assert await app.ctx.ops.count("status:dead") == 1000 - BATCH


async def test_equivalent_cli_command_for_the_filter(make_app: MakeApp) -> None:
    app, seen = make_app("three_dead"), []

    def keep(message: Message) -> None:
        seen.append(message)

    async with app.run_test(size=(120, 36), message_hook=keep) as pilot:
        await pilot.press("d", "slash")
        await type_text(pilot, "to:@example.org")
        await pilot.press("enter", "y")
        await settle(pilot)
        notes = [n.message for n in app._notifications]
        assert (
            "mailconsole replay --all --search 'status:dead to:@example.org'" in notes
        )


async def test_dead_list_pages_instead_of_loading_everything(make_app: MakeApp) -> None:
    app = make_app("many_dead(1000)")
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.press("d")
        await settle(pilot)
        assert len(shown_ids(app)) == 200
        assert "1,000 matching" in screen_text(app)
        await pilot.press("end")
        await settle(pilot)
        assert len(shown_ids(app)) == 400


async def test_scheduled_shows_next_try_relative_to_the_clock(
    make_app: MakeApp,
) -> None:
    app = make_app("mixed")
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.press("s")
        await settle(pilot)
        assert isinstance(app.screen, RetriesScreen)
        assert shown_ids(app) == ["m-0004", "m-0002"]
        text = screen_text(app)
        assert "in 5m" in text and "held" in text and "Greylisted" in text


async def test_retry_hold_release_and_delete_from_scheduled(make_app: MakeApp) -> None:
    app = make_app("mixed")
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.press("s")
        await settle(pilot)
        await pilot.press("down", "h")  # m-0002 scheduled -> held
        await settle(pilot)
        assert await status_of(app, "m-0002") == "held"
        await pilot.press("h")  # and back
        await settle(pilot)
        assert await status_of(app, "m-0002") == "scheduled"
        app.screen.query_one(MessageTable).move_cursor(
            row=shown_ids(app).index("m-0002")
        )
        await pilot.press("r")
        await settle(pilot)
        # due now; no scheduler runs in this test, so it stays scheduled until one
        # claims it
        detail = await app.ctx.ops.show("m-0002")
        assert detail.summary.status == "scheduled"
        assert detail.summary.next_attempt_at == NOW
        await pilot.press("home", "x")
        await settle(pilot)
        await pilot.press("y")
        await settle(pilot)
        assert await status_of(app, "m-0004") == "deleted"


async def test_read_only_hides_and_refuses_mutations(make_app: MakeApp) -> None:
    app = make_app("three_dead", read_only=True)
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.press("d")
        await settle(pilot)
        footer = screen_text(app).splitlines()[-1]
        assert "Replay" not in footer and "Filter" in footer
        await pilot.press("r", "R", "x", "e")
        await settle(pilot)
        assert isinstance(app.screen, DeadScreen)
        assert await app.ctx.ops.count("status:dead") == 3
