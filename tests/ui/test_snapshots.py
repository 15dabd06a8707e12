"""Snapshots of every main screen at 80x24 (SSH-sized) and 120x40, with fixed data.

The store is seeded with fixed ids and times and the ops read a ``FixedClock``, so
relative times ("in 5m", "3m ago") and every figure are the same on each run. Input
cursors are told not to blink (a blink mid-capture would change the picture).
Update with ``pytest tests/ui/test_snapshots.py --snapshot-update`` after reading
the report, and commit the SVGs with their cause.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input, TextArea

from mailconsole.app import MailConsoleApp
from tests.ui.conftest import settle

MakeApp = Callable[..., MailConsoleApp]
Compare = Callable[..., bool]
SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 40), id="120x40")]
SCREENS = {
    # name: (seed, keys pressed after start)
    "queue": ("mixed", ()),
    "scheduled": ("mixed", ("s",)),
    "dead": ("three_dead", ("d",)),
    "dead_grouped": ("three_dead", ("d", "g")),
    "detail": ("mixed", ("d", "enter")),
    "compose": (None, ("c",)),
    "help": ("three_dead", ("d", "question_mark")),
}


def steady(keys: Sequence[str]) -> Callable[[Pilot[Any]], Awaitable[None]]:
    """Press ``keys``, then wait until every load is done and nothing blinks."""

    async def run_before(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        for key in keys:
            await pilot.press(key)
            await settle(pilot)
        for field in pilot.app.screen.query(Input):
            field.cursor_blink = False
        for area in pilot.app.screen.query(TextArea):
            area.cursor_blink = False
        await pilot.pause()

    return run_before


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("screen", list(SCREENS))
def test_screen(
    snap_compare: Compare, make_app: MakeApp, screen: str, size: tuple[int, int]
) -> None:
    seed, keys = SCREENS[screen]
    assert snap_compare(make_app(seed), terminal_size=size, run_before=steady(keys))


def test_dead_with_no_color(
    snap_compare: Compare, make_app: MakeApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NO_COLOR: no colour at all, the current screen and the cursor row still show."""
    monkeypatch.setenv("NO_COLOR", "1")
    app = make_app("three_dead")
    assert app.no_color
    assert snap_compare(app, terminal_size=(80, 24), run_before=steady(["d"]))
