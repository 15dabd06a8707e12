"""The console hosting a real engine: real RabbitMQ (a queue of the test's own), an
in-test SMTP server, SQLite in ``tmp_path``. Keys in, mail out.

The app is built by ``cli.console.hosted_app``, the same wiring ``mailconsole`` uses,
so these tests cover the engine start/stop around the UI too.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from mailconsole.app import MailConsoleApp
from mailconsole.cli.console import hosted_app
from mailconsole.config import Settings
from mailconsole.engine.errors import NotFound
from mailconsole.engine.ops import Ops
from mailconsole.screens.compose import ComposeScreen
from mailconsole.screens.dead import DeadScreen
from mailconsole.screens.edit import EditModal
from mailconsole.screens.message_detail import MessageDetailScreen
from mailconsole.screens.preview import PreviewModal
from mailconsole.screens.queue import QueueScreen
from mailconsole.screens.retries import RetriesScreen
from mailconsole.widgets.message_table import MessageTable
from tests.support.engine import wait_until
from tests.support.smtp_server import Fault, FaultySMTPServer
from tests.ui.conftest import screen_text, settle, type_text

pytestmark = pytest.mark.rabbitmq

Console = Callable[..., contextlib.AbstractAsyncContextManager[MailConsoleApp]]
SIZE = (120, 36)


def job(to: str, subject: str = "Order 7 shipped") -> dict[str, Any]:
    return {
        "from": "Shop <shop@example.com>",
        "to": [to],
        "subject": subject,
        "text": "Your order is on its way.",
    }


@pytest.fixture
def console(
    engine_factory: Callable[..., Settings], smtp_server: FaultySMTPServer
) -> Console:
    """``async with console(**settings) as app``: the app over a started engine."""

    @contextlib.asynccontextmanager
    async def make(
        *, read_only: bool = False, **over: Any
    ) -> AsyncIterator[MailConsoleApp]:
        settings = engine_factory(smtp_server.port, **over)
        async with hosted_app(settings, read_only, False, None) as app:
            yield app

    return make


async def reach(ops: Ops, message_id: str, status: str, timeout: float = 15) -> None:
    """Wait for ``message_id`` to be in ``status``; say where it is if it never is."""

    async def check() -> bool:
        try:
            return (await ops.show(message_id)).summary.status == status
        except NotFound:  # the engine has not taken it off the queue yet
            return False

    try:
        await wait_until(check, timeout, f"{message_id} {status}")
    except AssertionError as exc:
        try:
            s = (await ops.show(message_id)).summary
            where = f"{s.status}, attempts {s.attempts}, last error {s.last_error}"
        except NotFound:
            where = "not in the store"
        raise AssertionError(f"{exc}; it is {where}") from None


def shown_ids(app: MailConsoleApp) -> list[str]:
    return [row.id for row in app.screen.query_one(MessageTable).rows_loaded]


def notes(app: MailConsoleApp) -> str:
    return "\n".join(str(n.message) for n in app._notifications)


async def test_a_bounce_is_edited_to_a_good_address_replayed_and_arrives(
    console: Console, smtp_server: FaultySMTPServer
) -> None:
    smtp_server.faults.append(
        Fault("rcpt", reply="550 5.1.1 no such user here", recipient="^nobody@")
    )
    async with console() as app, app.run_test(size=SIZE) as pilot:
        ops = app.ctx.ops
        message_id = await ops.send(job("nobody@example.com"))
        await reach(ops, message_id, "dead")
        await pilot.press("d", "ctrl+r")
        await settle(pilot)
        assert isinstance(app.screen, DeadScreen)
        assert shown_ids(app) == [message_id]
        assert "550 5.1.1 no such user here" in screen_text(app)

        await pilot.press("e")
        await settle(pilot)
        assert isinstance(app.screen, EditModal)
        await pilot.press("tab", "ctrl+a", "ctrl+k")  # to the To field, emptied
        await type_text(pilot, "bob@")
        await pilot.pause(0.4)  # the validation debounce
        assert "✗" in screen_text(app)  # validated as the operator types
        await pilot.press("ctrl+s")  # refused while there are problems
        await settle(pilot)
        assert isinstance(app.screen, EditModal)
        assert "fix the problems first" in notes(app)
        await type_text(pilot, "example.com")
        await pilot.pause(0.4)
        assert "✓ valid" in screen_text(app)
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert isinstance(app.screen, DeadScreen)

        received = await smtp_server.wait_for(1, timeout=10)
        assert received[0].recipients == ("bob@example.com",)
        original = await ops.show(message_id)
        assert original.summary.status == "dead"  # kept, linked to its copy
        (copy,) = original.edited_into
        await reach(ops, copy, "sent")
        assert f"edited copy {copy} queued" in notes(app)


async def test_detail_shows_the_timeline_and_replays_from_there(
    console: Console, smtp_server: FaultySMTPServer
) -> None:
    # permanent, but not a bad address (5.1.1 would put it on the suppression
    # list, and a replay to a suppressed address is refused)
    smtp_server.faults.append(
        Fault("rcpt", reply="552 5.2.2 mailbox full (for now)", times=1)
    )
    async with console() as app, app.run_test(size=SIZE) as pilot:
        ops = app.ctx.ops
        message_id = await ops.send(job("ann@example.com", "Invoice 12"))
        await reach(ops, message_id, "dead")
        await pilot.press("d", "ctrl+r")
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, MessageDetailScreen)
        text = screen_text(app)
        for seen in ("DEAD", "Invoice 12", "accepted", "#1 permanent", "dead"):
            assert seen in text
        assert "552 5.2.2 mailbox full (for now)" in text

        await pilot.press("right_square_bracket")  # the Headers tab
        await settle(pilot)
        assert "Subject: Invoice 12" in screen_text(app)
        await pilot.press("left_square_bracket")

        await pilot.press("r")  # replay, from the detail
        await settle(pilot)
        await reach(ops, message_id, "sent")
        assert len(await smtp_server.wait_for(1)) == 1
        await pilot.press("ctrl+r")
        await settle(pilot)
        text = screen_text(app)
        # a replay counts attempts afresh: the delivery is attempt #1 again
        assert "replay by" in text and "#1 sent" in text and "delivered" in text
        assert text.index("replay by") < text.index("#1 sent")
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(app.screen, DeadScreen)


async def test_scheduled_hold_release_and_retry_now_deliver(
    console: Console, smtp_server: FaultySMTPServer
) -> None:
    smtp_server.faults.append(
        Fault("rcpt", reply="451 4.7.1 greylisted, come back later", times=1)
    )
    # a long first delay, so the message waits on the Scheduled screen
    retry = {"base_delay": 60, "max_delay": 120}
    async with console(retry=retry) as app, app.run_test(size=SIZE) as pilot:
        ops = app.ctx.ops
        message_id = await ops.send(job("cy@example.com", "Sign-in code 4411"))
        await reach(ops, message_id, "scheduled")
        await pilot.press("s", "ctrl+r")
        await settle(pilot)
        assert isinstance(app.screen, RetriesScreen)
        assert shown_ids(app) == [message_id]
        text = screen_text(app)
        assert "451 4.7.1 greylisted" in text and "in " in text

        await pilot.press("h")
        await settle(pilot)
        assert (await ops.show(message_id)).summary.status == "held"
        assert "held" in screen_text(app)
        await pilot.press("h")
        await settle(pilot)
        assert (await ops.show(message_id)).summary.status == "scheduled"

        await pilot.press("r")  # retry now: the hosted scheduler is woken
        await reach(ops, message_id, "sent", timeout=10)
        assert (await smtp_server.wait_for(1))[0].recipients == ("cy@example.com",)


async def test_compose_validates_previews_sends_and_the_live_tail_shows_it(
    console: Console, smtp_server: FaultySMTPServer
) -> None:
    async with console() as app, app.run_test(size=SIZE) as pilot:
        await pilot.press("c")
        await settle(pilot)
        assert isinstance(app.screen, ComposeScreen)
        await type_text(pilot, "shop@example.com")
        await pilot.press("tab")
        await type_text(pilot, "eve@")
        await pilot.pause(0.4)
        assert "✗" in screen_text(app)
        await type_text(pilot, "example.com")
        await pilot.press("tab", "tab")  # past Cc, to Subject
        await type_text(pilot, "Hello Eve")
        await pilot.press("tab", "tab", "tab")  # past Template and Send at, to Body
        await type_text(pilot, "Welcome aboard")
        await pilot.pause(0.4)
        assert "✓ valid" in screen_text(app)

        await pilot.press("ctrl+o")
        await settle(pilot)
        assert isinstance(app.screen, PreviewModal)
        text = screen_text(app)
        assert "Subject: Hello Eve" in text and "Welcome aboard" in text
        await pilot.press("escape")

        await pilot.press("ctrl+s")
        await settle(pilot)
        (message_id,) = app.screen.sent
        assert f"sent  {message_id}" in screen_text(app)
        received = (await smtp_server.wait_for(1))[0]
        assert received.recipients == ("eve@example.com",)
        assert b"Welcome aboard" in received.data
        await reach(app.ctx.ops, message_id, "sent")

        await pilot.press("escape", "l")  # out of the form, then to Live
        await pilot.pause(0.6)  # an event flush and a stats tick
        await settle(pilot)
        assert isinstance(app.screen, QueueScreen)
        text = screen_text(app)
        assert f"sent   {message_id}" in text
        assert "SMTP pool" in text and "open" in text
