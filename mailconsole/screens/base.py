"""What every console screen shares: its context, the nav bar, read-only gating and
one place where a failed worker becomes a notification.

A screen's workers use ``exit_on_error=False``; their failures arrive here as
``Worker.StateChanged`` and are shown with :meth:`ConsoleScreen.report_error`, so an
error in one action never takes the console down.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import ClassVar

from textual.screen import Screen
from textual.worker import Worker, WorkerState

from mailconsole.engine.errors import MailconsoleError
from mailconsole.messages import EngineEvents
from mailconsole.screens.context import ConsoleContext
from mailconsole.widgets.nav_bar import NavBar
from mailconsole.widgets.safe_text import visible

log = logging.getLogger(__name__)

SCREENS: tuple[tuple[str, str, str], ...] = (
    ("live", "l", "Live"),
    ("scheduled", "s", "Scheduled"),
    ("dead", "d", "Dead"),
    ("compose", "c", "Compose"),
    ("captured", "m", "Captured"),
)
"""(name, key, title) of every top-level screen, in nav order."""


def nav_items(ctx: ConsoleContext) -> list[tuple[str, str, str]]:
    """The screens this console offers (Captured only with the demo's capture server)."""
    return [
        item for item in SCREENS if item[0] != "captured" or ctx.capture is not None
    ]


def mode_label(ctx: ConsoleContext) -> str:
    parts = ["observing" if ctx.observing else "engine"]
    if ctx.capture is not None:
        parts.append("demo")
    if ctx.read_only:
        parts.append("read-only")
    return " · ".join(parts)


def error_text(error: BaseException | None) -> str:
    """One line for the operator; engine errors already are one."""
    if error is None:
        return "unknown error"
    if isinstance(error, MailconsoleError):
        return str(error)
    return f"{type(error).__name__}: {error}"


class ConsoleScreen(Screen[None]):
    """Base of the console's screens."""

    NAV: ClassVar[str] = ""
    """The nav entry marked while this screen shows."""
    MUTATIONS: ClassVar[frozenset[str]] = frozenset()
    """Actions that change something: hidden and refused in read-only mode."""

    def __init__(self, ctx: ConsoleContext) -> None:
        super().__init__()
        self.ctx = ctx
        self.nav_name = self.NAV

    def now(self) -> datetime:
        return self.ctx.clock.now()

    def nav_bar(self) -> NavBar:
        bar = NavBar(nav_items(self.ctx), mode_label(self.ctx))
        bar.current = self.nav_name
        return bar

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return not (action in self.MUTATIONS and self.ctx.read_only)

    def refused(self) -> bool:
        """True (after telling the operator) when mutations are not allowed."""
        if self.ctx.read_only:
            self.notify(
                "read-only console: this action is disabled", severity="warning"
            )
        return self.ctx.read_only

    def report_error(self, error: BaseException | None, title: str = "Failed") -> None:
        if error is not None and not isinstance(error, MailconsoleError):
            log.error("console action failed", exc_info=error)
        self.notify(
            visible(error_text(error)), title=title, severity="error", markup=False
        )

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state is WorkerState.ERROR:
            self.report_error(event.worker.error)

    def on_engine_events(self, message: EngineEvents) -> None:
        """Engine activity; screens that show live data override this."""

    async def on_nav_bar_picked(self, message: NavBar.Picked) -> None:
        await self.app.run_action(f"show({message.screen_name!r})")
