"""Dead list at scale: how long the dead letters take to open and filter.

Seeds N dead messages (default 100,000: 550 5.1.1, one recipient each at one of ten
domains, ``tests.support.seed.many_dead``) into a fresh SQLite store, then measures

* through the operations API, the calls the dead screen makes (``list_messages``
  for a page of ``PAGE_SIZE`` rows and for the next page, ``count`` for the title,
  ``failures`` for the group-by-cause view), for several filters;
* the real console, run headless at 120x40 and built as the UI tests build it (real
  ``Ops`` over the store, a fixed clock, no engine, no broker): ``d`` until the
  table holds the first page (and the title its count), ``g`` until the causes are
  shown and ``g`` back, ``/`` and a filter until the filtered rows are shown, then
  ``g`` and Enter on the cause until its messages are.

"Shown" is polled from the widgets every few milliseconds, from the moment the key
is sent (the paint follows within a frame). "Loop stall" is the longest the event
loop was blocked during the step, paint included: the console can neither draw nor
take a key meanwhile, so that is the pause an operator sees. It prints figures,
median and max over ``--repeat`` runs, with the machine's load; it asserts no limits.

    .venv/bin/python bench/dead_list.py                      # 100,000 dead
    .venv/bin/python bench/dead_list.py --messages 10000 --repeat 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: the test support code lives in tests/
    sys.path.insert(0, str(ROOT))

from textual import events  # noqa: E402
from textual.message import Message  # noqa: E402
from textual.pilot import Pilot  # noqa: E402
from textual.widgets import Input  # noqa: E402
from textual.worker import Worker, WorkerState  # noqa: E402

from mailconsole.app import MailConsoleApp  # noqa: E402
from mailconsole.config import Settings  # noqa: E402
from mailconsole.engine.clock import FixedClock  # noqa: E402
from mailconsole.engine.events import EventBus  # noqa: E402
from mailconsole.engine.ops import Ops  # noqa: E402
from mailconsole.engine.store.db import Database  # noqa: E402
from mailconsole.screens.context import ConsoleContext  # noqa: E402
from mailconsole.screens.dead import DeadScreen  # noqa: E402
from mailconsole.screens.message_list import FILTER_DELAY, PAGE_SIZE  # noqa: E402
from tests.support.seed import NOW, many_dead  # noqa: E402

BASE = DeadScreen.BASE_QUERY
FILTERS = (  # typed in the dead screen's filter box ("" = the list as it opens)
    "",
    "to:@domain3.example",
    "to:user77@domain7.example",
    '"Order 4242"',
    "code:550",
)
BARE = ("to:@domain3.example", "to:user77@domain7.example")
"""The same filters without the screen's ``status:dead``, as ``mailconsole list``."""
TYPED = "to:@domain3.example"
"""What the console run types into the filter box."""
POLL = 0.005
"""Seconds between two looks at the widgets."""
PATIENCE = 120.0
KEY_NAMES = {":": "colon", "@": "at", ".": "full_stop"}
"""Key names of the typed characters that are not named by themselves."""
CHARACTERS = {"enter": "\r", "slash": "/"}

Timings = dict[str, list[float]]


@dataclass
class Expected:
    """What the console's widgets must hold after each step, read through ops."""

    pages: dict[str, list[str]] = field(default_factory=dict)
    """First-page ids by query."""
    totals: dict[str, int] = field(default_factory=dict)
    causes: list[str] = field(default_factory=list)
    """Group keys of the whole dead list."""
    typed_cause: str = ""
    """The one group key of the dead list filtered by :data:`TYPED`."""

    @property
    def cause_query(self) -> str:
        return f"group:{self.typed_cause}"


def ms(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values) * 1000:.0f} / {max(values) * 1000:.0f}"


def make_ops(url: str) -> Ops:
    """Ops as tests/ui/conftest.py's ``make_app`` builds them: no broker, fixed clock."""
    return Ops(
        Settings.model_validate({"database_url": url}),
        db=Database(url),
        broker=None,
        bus=EventBus(),
        clock=FixedClock(NOW),
        actor="bench",
    )


async def timed(call: Awaitable[Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = await call
    return time.perf_counter() - started, result


# -- the operations API -----------------------------------------------------------


async def list_figures(
    ops: Ops, query: str, repeat: int
) -> tuple[int, Timings, list[str]]:
    """(matches, timings, first-page ids) of one list."""
    out: Timings = {"first": [], "next": [], "count": []}
    ids: list[str] = []
    total = 0
    for _ in range(repeat):
        spent, page = await timed(ops.list_messages(query, limit=PAGE_SIZE))
        out["first"].append(spent)
        ids = [m.id for m in page.items]
        if page.next_cursor is not None:
            more = ops.list_messages(query, limit=PAGE_SIZE, cursor=page.next_cursor)
            out["next"].append((await timed(more))[0])
        spent, total = await timed(ops.count(query))
        out["count"].append(spent)
    return total, out, ids


async def cause_figures(ops: Ops, repeat: int, expected: Expected) -> list[str]:
    """Time the group-by-cause reads; returns their lines of the table."""
    every: list[float] = []
    narrowed: list[float] = []
    for _ in range(repeat):
        spent, groups = await timed(ops.failures(BASE))
        every.append(spent)
        spent, typed = await timed(ops.failures(f"{BASE} {TYPED}"))
        narrowed.append(spent)
    expected.causes = [g.key for g in groups]
    expected.typed_cause = typed[0].key
    every_label = f"failures {BASE} ({len(groups)} groups)"
    typed_label = f"failures {BASE} {TYPED} ({len(typed)})"
    return [
        f"  {every_label:<49} {ms(every):>11}",
        f"  {typed_label:<49} {ms(narrowed):>11}",
    ]


async def ops_section(url: str, repeat: int) -> Expected:
    """Print the ops figures; return what the console run checks its widgets by."""
    ops = make_ops(url)
    expected = Expected()
    try:
        print(
            f"ops API, ms, median / max of {repeat} (pages of {PAGE_SIZE}, "
            "as the dead screen asks):"
        )
        print(f"  {'query':<40} {'matches':>8} {'first page':>11} "
              f"{'next page':>10} {'count':>10}")  # fmt: skip
        causes = await cause_figures(ops, repeat, expected)  # the group:KEY to list
        queries = [f"{BASE} {f}".strip() for f in (*FILTERS, expected.cause_query)]
        for query in [*queries, *BARE]:
            total, got, ids = await list_figures(ops, query, repeat)
            expected.pages[query], expected.totals[query] = ids, total
            print(
                f"  {query:<40} {total:>8,} {ms(got['first']):>11} "
                f"{ms(got['next']):>10} {ms(got['count']):>10}"
            )
        print(*causes, sep="\n")
        return expected
    finally:
        await ops.db.dispose()


# -- the console ------------------------------------------------------------------


class Stalls:
    """The longest time the event loop went without running a ticker that sleeps
    :data:`POLL` (the console can neither draw nor take a key meanwhile), since the
    last :meth:`reset`."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(POLL)
            self.longest = max(self.longest, time.perf_counter() - before - POLL)

    def start(self) -> None:
        self._task = asyncio.create_task(self._tick())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def reset(self) -> None:
        self.longest = 0.0


class Watch:
    """Workers seen by the app (``run_test``'s message hook): when each was first
    seen and whether it succeeded, so a step can wait for a worker it started."""

    def __init__(self) -> None:
        self.seen: dict[Worker[Any], float] = {}
        self.succeeded: set[Worker[Any]] = set()

    def __call__(self, message: Message) -> None:
        if isinstance(message, Worker.StateChanged):
            self.seen.setdefault(message.worker, time.perf_counter())
            if message.state == WorkerState.SUCCESS:
                self.succeeded.add(message.worker)

    def finished(self, group: str, since: float) -> bool:
        """A worker of ``group`` first seen after ``since`` has succeeded."""
        return any(
            w.group == group and at >= since and w in self.succeeded
            for w, at in self.seen.items()
        )


def send(app: MailConsoleApp, *keys: str) -> float:
    """Queue key presses as the terminal driver does, without ``Pilot.press``'s wait
    for idle; returns the moment the last one was sent."""
    for key in keys:
        character = key if len(key) == 1 else CHARACTERS.get(key)
        event = events.Key(KEY_NAMES.get(key, key), character)
        event.set_sender(app)
        app.post_message(event)
    return time.perf_counter()


async def until(
    pilot: Pilot[None], started: float, check: Callable[[], bool], what: str
) -> float:
    """Seconds from ``started`` until ``check()`` holds, looking every :data:`POLL`."""
    while not check():
        if time.perf_counter() - started > PATIENCE:
            raise SystemExit(f"the console did not show {what} in {PATIENCE:.0f} s")
        await pilot.pause(POLL)
    return time.perf_counter() - started


async def settle(pilot: Pilot[None]) -> None:
    """Wait until no worker runs (but the event bridge, which never ends)."""
    started = time.perf_counter()
    while time.perf_counter() - started < PATIENCE:
        await pilot.pause(0.05)
        workers = pilot.app.workers
        if not any(w.is_running for w in workers if w.group != "engine-events"):
            return


def holds(screen: DeadScreen | None, ids: list[str]) -> bool:
    """The table holds the page ``ids`` (its row count and first and last row)."""
    if screen is None:
        return False
    rows = screen.table.rows_loaded
    return (
        screen.table.row_count == len(ids)
        and [r.id for r in rows[:1] + rows[-1:]] == ids[:1] + ids[-1:]
    )


def dead_screen(app: MailConsoleApp) -> DeadScreen | None:
    screen = app.screen
    return screen if isinstance(screen, DeadScreen) else None


def shows_causes(screen: DeadScreen, keys: list[str]) -> bool:
    groups = screen.groups
    return (
        screen.grouped
        and [g.key for g in groups.groups] == keys
        and groups.row_count == len(keys)
    )


STEPS = {
    "d": "d: open the dead list (first page shown)",
    "d count": "   ... and its count in the title",
    "g": "g: group by cause (all causes shown)",
    "g back": "g: back to the list (its reload done)",
    "filter": f"/ {TYPED} Enter: filtered rows shown *",
    "g filtered": "g: causes of the filtered list shown",
    "cause": "Enter on that cause: its messages (group:KEY) *",
}


async def console_run(
    url: str, expected: Expected, out: Timings, stalled: Timings
) -> None:
    """One cold console through :data:`STEPS`; appends the seconds each took until
    shown, and the longest event-loop stall meanwhile.

    Over the 40-line guide: the steps read best as one walk, in the order an
    operator takes them, each a key and what must then be shown.
    """
    ops = make_ops(url)
    ctx = ConsoleContext(ops=ops, clock=ops.clock)
    app = MailConsoleApp(ctx, on_close=ops.db.dispose)
    watch, pages, stalls = Watch(), expected.pages, Stalls()
    async with app.run_test(size=(120, 40), message_hook=watch) as pilot:

        async def step(
            name: str,
            keys: tuple[str, ...],
            check: Callable[[float], bool],
            then: tuple[str, Callable[[], bool]] | None = None,
        ) -> None:
            """Send ``keys``, time until ``check(sent)`` (and ``then``) hold, wait for
            the paint and whatever else the keys set off, note the longest stall."""
            stalls.reset()
            sent = send(app, *keys)
            out[name].append(await until(pilot, sent, lambda: check(sent), STEPS[name]))
            if then is not None:
                out[then[0]].append(await until(pilot, sent, then[1], STEPS[then[0]]))
            await pilot.pause()
            stalled[name].append(stalls.longest)

        await settle(pilot)
        stalls.start()
        total = expected.totals[BASE]
        await step(
            "d",
            ("d",),
            lambda _: holds(dead_screen(app), pages[BASE]),
            ("d count", lambda: getattr(dead_screen(app), "total", None) == total),
        )
        screen = dead_screen(app)
        assert screen is not None
        await step("g", ("g",), lambda _: shows_causes(screen, expected.causes))
        await step(
            "g back",
            ("g",),
            lambda t: not screen.grouped and watch.finished("list-load", t),
        )
        box = screen.query_one("#filter", Input)
        await until(pilot, send(app, "slash"), lambda: box.has_focus, "the filter box")
        typed = pages[f"{BASE} {TYPED}"]
        # typed at once: the clock starts at the last key
        await step("filter", (*TYPED, "enter"), lambda _: holds(screen, typed))
        cause = [expected.typed_cause]
        await step("g filtered", ("g",), lambda _: shows_causes(screen, cause))
        rows = pages[f"{BASE} {expected.cause_query}"]
        await step(
            "cause",
            ("enter",),
            lambda t: (
                screen.filter_text == expected.cause_query
                and watch.finished("list-load", t)
                and holds(screen, rows)
            ),
        )
        await stalls.stop()
        await settle(pilot)  # quit with no query in flight, as an operator would


async def console_section(url: str, expected: Expected, repeat: int) -> None:
    out: Timings = {name: [] for name in STEPS}
    stalled: Timings = {name: [] for name in STEPS}
    for _ in range(repeat):
        await console_run(url, expected, out, stalled)
    print(
        f"console (headless, 120x40, a fresh app each run), ms, median / max of {repeat}:"
    )
    print(f"  {'key: until':<54} {'shown':>11} {'loop stall':>11}")
    for name, label in STEPS.items():
        print(f"  {label:<54} {ms(out[name]):>11} {ms(stalled[name]):>11}")
    print(
        f"  * from the last key, so with the filter box's {FILTER_DELAY * 1000:.0f} ms "
        "debounce"
    )


def mebibytes(path: Path) -> float:
    return path.stat().st_size / 2**20


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min), {os.cpu_count()} CPUs"


async def run(args: argparse.Namespace) -> None:
    tmp = tempfile.mkdtemp(prefix="mc-bench-dead-")
    url = f"sqlite+aiosqlite:///{tmp}/bench.db"
    try:
        print(f"machine: {load()} at the start")
        db = Database(url)
        try:
            await db.upgrade()
            seeded, _ = await timed(many_dead(db, args.messages))
        finally:
            await db.dispose()
        print(
            f"store:   sqlite, {args.messages:,} dead messages seeded in "
            f"{seeded:.2f} s ({mebibytes(Path(tmp, 'bench.db')):.0f} MiB)"
        )
        expected = await ops_section(url, args.repeat)
        await console_section(url, expected, args.repeat)
        print(f"machine: {load()} at the end")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
