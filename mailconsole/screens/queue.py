"""Live queue: depth, in flight, rates with 30-minute sparklines, oldest wait, SMTP
pool and a live tail of deliveries and failures.

Figures come from ``ops.stats()`` once a second (one query in flight at a time,
widgets updated in place, so nothing flickers); the tail comes from the app's
batched engine events, a few appends a second however fast the engine sends.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Footer, Label, Static

from mailconsole.messages import EngineEvents
from mailconsole.screens.base import ConsoleScreen
from mailconsole.widgets.event_tail import EventTail
from mailconsole.widgets.queue_stats import QueueStats, pool_text, status_text

STATS_INTERVAL = 1.0


class QueueScreen(ConsoleScreen):
    """The live picture of delivery."""

    CSS_PATH = "queue.tcss"

    NAV = "live"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+r", "reload", "Refresh", show=False, id="live.reload"),
        Binding("ctrl+l", "clear_tail", "Clear tail", show=False, id="live.clear_tail"),
        Binding(
            "f",
            "toggle_follow",
            "Follow tail",
            show=False,
            id="live.follow",
            tooltip="Stop or resume scrolling the tail to the newest line",
        ),
    ]

    _busy = False

    def compose(self) -> ComposeResult:
        yield self.nav_bar()
        yield QueueStats(id="stats")
        yield Static(id="statuses", markup=False)
        yield Static(id="pool", markup=False)
        yield Label("Latest deliveries and failures", classes="section")
        yield EventTail(id="tail")
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        tail = self.query_one(EventTail)
        if self.ctx.observing:
            tail.write(
                Text(
                    "observing: no engine in this process, so only this console's "
                    "own actions appear here; the figures above are read from the "
                    "shared store and broker",
                    style="dim",
                )
            )
        self.set_interval(STATS_INTERVAL, self.tick)
        self.refresh_stats()

    def tick(self) -> None:
        if self.is_current and not self._busy:
            self.refresh_stats()

    @work(group="live-stats", exit_on_error=False)
    async def refresh_stats(self) -> None:
        """Read the figures; the tick skips while a read is still running."""
        self._busy = True
        try:
            stats = await self.ctx.ops.stats()
        finally:
            self._busy = False
        self.query_one(QueueStats).show(stats)
        self.query_one("#statuses", Static).update(status_text(stats))
        pool = self.ctx.pool_stats() if self.ctx.pool_stats is not None else None
        self.query_one("#pool", Static).update(pool_text(pool, self.ctx.observing))

    def on_engine_events(self, message: EngineEvents) -> None:
        tail = self.query_one(EventTail)
        if message.dropped:
            tail.write(Text(f"… {message.dropped:,} events not shown", style="dim"))
        tail.add(message.tail())

    def action_reload(self) -> None:
        self.refresh_stats()

    def action_clear_tail(self) -> None:
        self.query_one(EventTail).clear()

    def action_toggle_follow(self) -> None:
        tail = self.query_one(EventTail)
        tail.auto_scroll = not tail.auto_scroll
        self.notify("tail follows new lines" if tail.auto_scroll else "tail paused")
