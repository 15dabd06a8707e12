"""The console's shell over the real ops and a seeded store (no engine, fixed clock):
help, the command palette, read-only mode, errors as notifications, the group
toggle, the equivalent CLI command and untrusted text end to end."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import pytest
from textual.command import CommandPalette
from textual.widgets import Button

from mailconsole.app import MailConsoleApp
from mailconsole.commands import screen_commands
from mailconsole.engine.store.db import Database
from mailconsole.engine.store.delivery import DeliveryStore
from mailconsole.engine.store.dto import Status
from mailconsole.screens.compose import ComposeScreen
from mailconsole.screens.dead import DeadScreen
from mailconsole.screens.help import HelpModal
from mailconsole.screens.message_detail import MessageDetailScreen
from mailconsole.screens.queue import QueueScreen
from mailconsole.screens.retries import RetriesScreen
from mailconsole.widgets.failure_table import FailureTable
from mailconsole.widgets.message_table import MessageTable
from mailconsole.widgets.safe_text import SafeText
from tests.support.seed import (
    NOW,
    SEED_WORKER,
    USER_UNKNOWN,
    job,
    new_message,
    result,
)
from tests.ui.conftest import screen_text, settle, terminal_segments, type_text

MakeApp = Callable[..., MailConsoleApp]
SIZE = (120, 36)
HOSTILE = "[bold red]x[/] \x1b]52;c;ZXZpbA==\x07\x1b[2J [@click=app.quit]q[/]"


def notes(app: MailConsoleApp) -> str:
    return "\n".join(str(n.message) for n in app._notifications)


def footer(app: MailConsoleApp) -> str:
    return screen_text(app).splitlines()[-1]


# -- help ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "expected"),
    [
        (
            "d",
            ["Replay", "Edit", "Causes", "Replay all", "Delete all", "Filter", "CLI"],
        ),
        ("s", ["Retry now", "Hold/release", "Delete", "Filter", "Reload"]),
        ("l", ["Refresh", "Clear tail", "Follow tail"]),
    ],
)
async def test_help_lists_every_binding_of_the_screen(
    make_app: MakeApp, key: str, expected: list[str]
) -> None:
    app = make_app("mixed")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(key)
        await settle(pilot)
        await pilot.press("question_mark")
        await settle(pilot)
        assert isinstance(app.screen, HelpModal)
        text = screen_text(app)
        for description in [*expected, "Help", "Theme", "Dead", "Compose"]:
            assert description in text, description
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpModal)


async def test_help_on_compose_is_reachable_from_inside_a_field(
    make_app: MakeApp,
) -> None:
    app = make_app(None)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("c")
        await settle(pilot)
        await pilot.press("escape", "question_mark")
        await settle(pilot)
        assert isinstance(app.screen, HelpModal)
        text = screen_text(app)
        assert "Send" in text and "Preview" in text


# -- the command palette ------------------------------------------------------------
async def test_the_palette_reaches_each_screen(make_app: MakeApp) -> None:
    app = make_app("three_dead")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        for title, screen in (
            ("Go to Dead", DeadScreen),
            ("Go to Scheduled", RetriesScreen),
            ("Go to Compose", ComposeScreen),
            ("Go to Live", QueueScreen),
        ):
            await pilot.press("ctrl+p")
            await settle(pilot)
            assert isinstance(app.screen, CommandPalette)
            await type_text(pilot, title)
            await pilot.pause(0.3)
            await pilot.press("enter")
            await settle(pilot)
            assert isinstance(app.screen, screen), title


async def test_the_palette_runs_a_screen_action(make_app: MakeApp) -> None:
    app = make_app("three_dead", start="dead")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+p")
        await type_text(pilot, "Causes")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, DeadScreen) and app.screen.grouped


# -- read-only ----------------------------------------------------------------------
async def test_read_only_hides_and_refuses_every_mutation(make_app: MakeApp) -> None:
    app = make_app("mixed", read_only=True)
    ops = app.ctx.ops
    before = {s: await ops.count(f"status:{s}") for s in ("dead", "scheduled", "held")}
    async with app.run_test(size=SIZE) as pilot:
        assert "read-only" in screen_text(app).splitlines()[0]
        await pilot.press("d")
        await settle(pilot)
        assert not {"Replay", "Edit", "Replay all"} & set(footer(app).split("  "))
        await pilot.press("r", "e", "R", "X", "x")
        await settle(pilot)
        assert isinstance(app.screen, DeadScreen)
        # bindings are disabled; the actions themselves refuse too, with a reason
        assert app.screen.check_action("replay", ()) is False
        app.screen.action_replay()
        app.screen.action_bulk("replay")
        await settle(pilot)
        assert isinstance(app.screen, DeadScreen)
        assert "read-only console" in notes(app)

        await pilot.press("enter")  # the detail offers no action either
        await settle(pilot)
        assert isinstance(app.screen, MessageDetailScreen)
        assert "Replay" not in footer(app) and "Delete" not in footer(app)
        await pilot.press("r", "e", "x")
        await settle(pilot)
        assert isinstance(app.screen, MessageDetailScreen)

        await pilot.press("s")
        await settle(pilot)
        assert "Retry now" not in footer(app) and "Hold" not in footer(app)
        await pilot.press("r", "h", "x")
        await settle(pilot)

        await pilot.press("c")
        await settle(pilot)
        assert not app.screen.query("#send")  # no Send button at all
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert isinstance(app.screen, ComposeScreen) and not app.screen.sent

        await pilot.press("escape", "d", "d")  # Dead kept its detail: d again pops it
        await settle(pilot)
        assert isinstance(app.screen, DeadScreen)
        titles = [title for title, _help, _action in screen_commands(app.screen)]
        assert "Filter" in titles  # the palette offers what is allowed, only
        assert not {"Replay", "Edit", "Replay all", "Delete", "Delete all"} & set(
            titles
        )
    after = {s: await ops.count(f"status:{s}") for s in ("dead", "scheduled", "held")}
    assert after == before


# -- errors become notifications ----------------------------------------------------
async def test_an_unexpected_error_in_an_action_is_a_notification(
    make_app: MakeApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app("three_dead")

    async def broken(ids: Sequence[str], **_: Any) -> None:
        raise RuntimeError("the store went away")

    monkeypatch.setattr(app.ctx.ops, "replay", broken)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("d", "r")
        await settle(pilot)
        assert "RuntimeError: the store went away" in notes(app)
        assert app.is_running and isinstance(app.screen, DeadScreen)


async def test_sending_without_a_broker_says_why(make_app: MakeApp) -> None:
    app = make_app(None)  # no broker: a MailconsoleError from ops.send
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("c")
        await type_text(pilot, "shop@example.com")
        await pilot.press("tab")
        await type_text(pilot, "eve@example.com")
        await pilot.press("tab", "tab")
        await type_text(pilot, "Hi")
        await pilot.press("tab", "tab", "tab")
        await type_text(pilot, "Hello")
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert "not connected to RabbitMQ" in notes(app)
        assert app.is_running


async def test_a_missing_message_is_a_notification(make_app: MakeApp) -> None:
    app = make_app("three_dead")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("d")
        await settle(pilot)
        app.push_screen(MessageDetailScreen(app.ctx, "m-nope", "dead"))
        await settle(pilot)
        assert "no message m-nope" in notes(app)
        assert app.is_running


# -- grouping, filter, CLI ----------------------------------------------------------
async def test_group_toggle_goes_back_to_the_list(make_app: MakeApp) -> None:
    app = make_app("three_dead")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("d", "g")
        await settle(pilot)
        groups = app.screen.query_one(FailureTable)
        assert groups.display and not app.screen.query_one(MessageTable).display
        assert "user unknown" in screen_text(app).lower()
        await pilot.press("y")  # the CLI command for the selected group
        key = groups.groups[0].key
        assert f"mailconsole replay --all --search 'status:dead group:{key}'" in notes(
            app
        )
        await pilot.press("g")
        await settle(pilot)
        assert app.screen.query_one(MessageTable).display and not groups.display
        assert [r.id for r in app.screen.query_one(MessageTable).rows_loaded] == [
            "m-0003",
            "m-0002",
            "m-0001",
        ]


async def test_the_scheduled_cli_command_lists_the_filter(make_app: MakeApp) -> None:
    app = make_app("mixed")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("s", "slash")
        await type_text(pilot, "to:ben@example.net")
        await pilot.press("enter", "y")
        await settle(pilot)
        assert (
            "mailconsole list --search 'status:scheduled,held to:ben@example.net'"
            in notes(app)
        )


# -- untrusted text -----------------------------------------------------------------
async def _hostile_dead(db: Database) -> None:
    store = DeliveryStore(db, SEED_WORKER)
    at = NOW - timedelta(minutes=1)
    message = new_message(9, "eve@example.com", subject=HOSTILE)
    await store.ingest([message], at)
    state = {"eve@example.com": "refused"}
    await store.record_results(
        [result(message.id, Status.DEAD, state, USER_UNKNOWN, at=at)], at
    )


async def test_markup_and_escapes_in_a_subject_are_shown_literally(
    make_app: MakeApp,
) -> None:
    app = make_app("three_dead", extra=_hostile_dead)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("d")
        await settle(pilot)
        text = screen_text(app)
        assert "[bold red]x[/] \\x1b]52;c;" in text
        written = "".join(terminal_segments(app))
        assert not any(c in written for c in "\x1b\x07\x9b")
        await pilot.press("enter")  # the newest: m-0009
        await settle(pilot)
        assert isinstance(app.screen, MessageDetailScreen)
        written = "".join(terminal_segments(app))
        assert "[@click=app.quit]q[/]" in written
        assert not any(c in written for c in "\x1b\x07\x9b")
        await pilot.click("#detail-head")
        assert app.is_running


async def test_the_mode_is_visible_and_buttons_follow_it(make_app: MakeApp) -> None:
    app = make_app(None, observing=True)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert "observing" in screen_text(app).splitlines()[0]
        await pilot.press("c")
        await settle(pilot)
        assert app.screen.query_one("#send", Button)


async def test_the_current_screen_is_marked_in_the_nav_bar(make_app: MakeApp) -> None:
    app = make_app("three_dead")
    async with app.run_test(size=SIZE) as pilot:
        for key, name in (("d", "dead"), ("s", "scheduled"), ("l", "live")):
            await pilot.press(key)
            await settle(pilot)
            marked = [item.id for item in app.screen.query(".-current")]
            assert marked == [f"nav-{name}"]


async def _no_longer_valid(db: Database) -> None:
    """m-0003's stored job loses its recipients, as if a stricter parser came later;
    m-0002's body has two lines."""
    from sqlalchemy import update

    from mailconsole.engine.store.models import MessageRow

    broken = {"from": "shop@example.com", "subject": "Order 3", "text": "x"}
    two_lines = {**job(2, "carol@example.org"), "text": "Line one.\nLine two.\n"}
    async with db.write() as session, session.begin():
        for message_id, payload in (("m-0003", broken), ("m-0002", two_lines)):
            await session.execute(
                update(MessageRow)
                .where(MessageRow.id == message_id)
                .values(payload=json.dumps(payload))
            )


@pytest.mark.parametrize(
    ("message_id", "expected"),
    [
        ("m-0003", "cannot render: the stored job no longer validates"),
        ("m-0002", "Line one.\nLine two."),
    ],
)
async def test_detail_says_why_a_stored_job_does_not_render(
    make_app: MakeApp, message_id: str, expected: str
) -> None:
    app = make_app("three_dead", extra=_no_longer_valid)
    async with app.run_test(size=SIZE) as pilot:
        app.push_screen(MessageDetailScreen(app.ctx, message_id, "dead"))
        await settle(pilot)
        shown = {
            part: str(app.screen.query_one(f"#content-{part}", SafeText).render())
            for part in ("headers", "text", "html")
        }
        assert expected in shown["text"]
        assert "\\x0d" not in shown["text"] and "\r" not in shown["text"]
        if message_id == "m-0003":
            assert all(v.startswith("cannot render: ") for v in shown.values())
