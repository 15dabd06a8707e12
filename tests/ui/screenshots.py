"""Export an SVG of each main screen into ``docs/screenshots/`` (shown in the README).

Run ``.venv/bin/python -m tests.ui.screenshots [--size 120x36] [--out DIR]``. The
console runs headless over the same fixed stores as the snapshot tests (seeded
ids, a ``FixedClock``), so the pictures only change when the console does. The
pictures are made by the app itself (``App.save_screenshot``).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

from textual.widgets import Input, TextArea

from mailconsole.app import MailConsoleApp
from mailconsole.config import Settings
from mailconsole.demo.capture import Captured, CaptureLog
from mailconsole.engine.clock import FixedClock
from mailconsole.engine.events import EventBus
from mailconsole.engine.ops import Ops
from mailconsole.engine.store.db import Database
from mailconsole.screens.context import ConsoleContext
from tests.support.seed import NOW, seed
from tests.ui.conftest import FIXED_POOL, settle

SHOTS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    # (file name, seed, keys)
    ("live", "mixed", ()),
    ("scheduled", "mixed", ("s",)),
    ("dead", "three_dead", ("d",)),
    ("dead-grouped", "three_dead", ("d", "g")),
    ("detail", "mixed", ("d", "enter")),
    ("compose", "mixed", ("c",)),
    ("help", "three_dead", ("d", "question_mark")),
    ("captured", "mixed", ("m",)),
)


def sample_capture() -> CaptureLog:
    """Three messages as the demo relay would have received them."""
    log = CaptureLog()
    for n, (rcpt, subject) in enumerate(
        [
            ("ann@example.com", "Your order #1 has shipped"),
            ("bob@example.com", "Sign-in code 4411"),
            ("chen@example.com", "[bold]Sale[/bold] 50% off"),
        ],
        start=1,
    ):
        data = (
            f"From: Demo Shop <shop@example.com>\r\nTo: {rcpt}\r\n"
            f"Subject: {subject}\r\nMessage-ID: <m-{n:04d}@mailconsole.local>\r\n\r\n"
            f"Hello,\r\n\r\nThis is demo message {n}.\r\n"
        ).encode()
        log.add(
            Captured(
                n,
                NOW - timedelta(minutes=4 - n),
                "shop@example.com",
                (rcpt,),
                subject,
                data,
            )
        )
    return log


async def shoot(
    name: str, scenario: str, keys: tuple[str, ...], size: tuple[int, int], out: Path
) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{tmp}/store.db"
        db = Database(url)
        await db.upgrade()
        await seed(db, scenario)
        ops = Ops(
            Settings.model_validate({"database_url": url}),
            db=db,
            broker=None,
            bus=EventBus(),
            clock=FixedClock(NOW),
            actor="docs",
        )
        ctx = ConsoleContext(
            ops=ops,
            clock=ops.clock,
            pool_stats=lambda: FIXED_POOL,
            capture=sample_capture(),
        )
        app = MailConsoleApp(ctx, on_close=db.dispose)
        async with app.run_test(size=size) as pilot:
            await settle(pilot)
            for key in keys:
                await pilot.press(key)
                await settle(pilot)
            _still(app)
            await pilot.pause()
            path = app.save_screenshot(f"{name}.svg", str(out))
    return Path(path)


def _still(app: Any) -> None:
    """No blinking cursor in a picture."""
    for widget in app.screen.query(Input):
        widget.cursor_blink = False
    for area in app.screen.query(TextArea):
        area.cursor_blink = False


async def main(size: tuple[int, int], out: Path) -> None:
    for name, scenario, keys in SHOTS:
        print(await shoot(name, scenario, keys, size, out))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="120x36", help="WIDTHxHEIGHT")
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    args.out.mkdir(parents=True, exist_ok=True)
    asyncio.run(main((width, height), args.out))
