"""The console under test: real ``Ops`` over a seeded SQLite store, a fixed clock, no
engine consuming (and no broker unless a test asks for one).

``make_app(seed="three_dead")`` returns a ``MailConsoleApp``; the app disposes its
store when it exits. Each scenario is seeded once per session through
``tests/support/seed.py`` and copied per test, so a test costs a file copy, not a
migration.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from textual import events
from textual.message import Message
from textual.pilot import Pilot

from mailconsole.app import MailConsoleApp
from mailconsole.config import Settings
from mailconsole.engine.broker import Broker
from mailconsole.engine.clock import FixedClock
from mailconsole.engine.events import EventBus, OperatorActed
from mailconsole.engine.ops import Ops
from mailconsole.engine.smtp import PoolStats
from mailconsole.engine.store.db import Database
from mailconsole.screens.context import CaptureLog, ConsoleContext
from tests.support.seed import NOW, seed

EVENT_GROUP = "engine-events"


def _in_thread(coro: Any) -> Any:
    """Run a coroutine to completion in a fresh loop, from sync or async tests."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


async def _seeded(path: Path, scenario: str | None) -> None:
    db = Database(f"sqlite+aiosqlite:///{path}")
    try:
        await db.upgrade()
        if scenario:
            await seed(db, scenario)
    finally:
        await db.dispose()


async def _extra(url: str, extra: Callable[[Database], Awaitable[object]]) -> None:
    db = Database(url)
    try:
        await extra(db)
    finally:
        await db.dispose()


@pytest.fixture(scope="session")
def seeded_store(
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[[str | None], Path]:
    """A template store per scenario, built once per session."""
    made: dict[str | None, Path] = {}

    def template(scenario: str | None) -> Path:
        if scenario not in made:
            name = (scenario or "empty").replace("(", "-").replace(")", "")
            path = tmp_path_factory.mktemp("stores") / f"{name}.db"
            _in_thread(_seeded(path, scenario))
            made[scenario] = path
        return made[scenario]

    return template


@dataclass
class Made:
    """What the factory built, for assertions."""

    apps: list[MailConsoleApp] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)


FIXED_POOL = PoolStats(
    size=8,
    open=3,
    idle=2,
    busy=1,
    sent=1234,
    failed=5,
    connects=4,
    last_error="421 4.7.0 [bold]try again[/bold] \x1b[2J later",
)


@pytest.fixture
def make_app(
    tmp_path: Path, seeded_store: Callable[[str | None], Path]
) -> Callable[..., MailConsoleApp]:
    """Build the console over a copy of a seeded store."""
    made = Made()

    def factory(
        seed: str | None = "three_dead",
        *,
        read_only: bool = False,
        observing: bool = False,
        start: str = "live",
        capture: CaptureLog | None = None,
        pool: bool = True,
        broker: Broker | None = None,
        settings: dict[str, Any] | None = None,
        extra: Callable[[Database], Awaitable[object]] | None = None,
    ) -> MailConsoleApp:
        path = tmp_path / f"store-{len(made.urls)}.db"
        shutil.copy(seeded_store(seed), path)
        url = f"sqlite+aiosqlite:///{path}"
        if extra is not None:
            _in_thread(_extra(url, extra))
        made.urls.append(url)
        values = {"database_url": url, **(settings or {})}
        ops = Ops(
            Settings.model_validate(values),
            db=Database(url),
            broker=broker,
            bus=EventBus(),
            clock=FixedClock(NOW),
            actor="tester",
        )
        ctx = ConsoleContext(
            ops=ops,
            clock=ops.clock,
            read_only=read_only,
            observing=observing,
            pool_stats=(lambda: FIXED_POOL) if pool and not observing else None,
            capture=capture,
        )
        app = MailConsoleApp(ctx, on_close=ops.db.dispose, start=start)
        made.apps.append(app)
        return app

    return factory


@pytest.fixture
async def ui_broker(amqp_url: str, queue_name: str) -> AsyncIterator[Broker]:
    """A connected broker on a queue of this test's own; nobody consumes it."""
    broker = Broker(amqp_url, queue_name, publish_timeout=5)
    await broker.connect()
    yield broker
    await broker.close()


async def settle(pilot: Pilot[Any], rounds: int = 3, patience: float = 0.5) -> None:
    """Wait until the console's workers are done or waiting on the operator.

    The event bridge never ends, and an action waiting for a modal's answer does
    not end until the test answers; a worker still running after ``patience``
    seconds, with nothing else changing, counts as waiting. Workers are polled,
    never awaited: cancelling a wait on ``Worker.wait()`` would cancel the
    worker's own task (it awaits the task directly), killing an action that was
    only waiting for the test to answer its modal.
    """
    app = pilot.app
    waiting: set[Any] = set()
    for _ in range(100):
        await pilot.pause()
        busy = _busy(app) - waiting
        if busy:
            deadline = asyncio.get_running_loop().time() + patience
            while busy and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.01)
                busy = {w for w in busy if w.is_running}
            waiting |= busy
            continue
        rounds -= 1
        if rounds <= 0:
            return
        await pilot.pause(0.02)


def _busy(app: Any) -> set[Any]:
    return {w for w in app.workers if w.group != EVENT_GROUP and w.is_running}


async def type_text(pilot: Pilot[Any], text: str) -> None:
    """Type plain ``text`` into the focused field, key by key, as an operator would.

    The keys are queued to the app in order and the screen is awaited once:
    ``Pilot.press`` waits for the process to idle after every key (~90 ms each on
    a busy machine), which adds nothing when the keys only type characters. Use
    ``pilot.press`` for keys that move focus or open screens.
    """
    app = pilot.app
    for char in text:
        key = events.Key(_key(char), char)
        key.set_sender(app)
        await app._post_message(key)
    await pilot.pause()


def _key(char: str) -> str:
    names = {
        " ": "space",
        "/": "slash",
        ":": "colon",
        "@": "at",
        ".": "full_stop",
        "-": "minus",
        '"': "quotation_mark",
        "+": "plus",
        ",": "comma",
        "<": "less_than_sign",
        ">": "greater_than_sign",
        "_": "underscore",
    }
    return names.get(char, char)


def acted(messages: Iterable[Message]) -> list[tuple[str, tuple[str, ...]]]:
    """(action, ids) of every OperatorActed event the screens were handed."""
    from mailconsole.messages import EngineEvents

    found = []
    for message in messages:
        if isinstance(message, EngineEvents):
            found += [
                (e.action, e.message_ids)
                for e in message.events
                if isinstance(e, OperatorActed)
            ]
    return found


def screen_text(app: MailConsoleApp) -> str:
    """What the terminal shows now, as plain text."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


def terminal_segments(app: MailConsoleApp) -> list[str]:
    """The text of every segment the driver would write for the current screen."""
    return [
        segment.text
        for strip in app.screen._compositor.render_strips()
        for segment in strip
    ]
