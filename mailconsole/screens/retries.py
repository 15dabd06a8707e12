"""Scheduled: messages waiting for a retry or a future send, and those on hold.

Shows recipient, subject, attempts, the next attempt (relative to the injected
clock) and the last error. Actions: retry now, hold/release, delete, open.
"""

from __future__ import annotations

from typing import ClassVar

from textual import work
from textual.binding import Binding, BindingType

from mailconsole.screens.message_list import MessageListScreen
from mailconsole.widgets.message_table import (
    ATTEMPTS,
    LAST_ERROR,
    NEXT,
    RECIPIENT,
    SUBJECT,
)


class RetriesScreen(MessageListScreen):
    """Waiting messages: retry them now, hold or release them, delete them."""

    NAV = "scheduled"
    BASE_QUERY = "status:scheduled,held"
    TITLE_TEXT = "Scheduled and held"
    COLUMNS = (RECIPIENT, SUBJECT, ATTEMPTS, NEXT, LAST_ERROR)
    EMPTY_TEXT = "Nothing is waiting for a retry or a later send."
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "r",
            "retry_now",
            "Retry now",
            id="scheduled.retry_now",
            tooltip="Queue the message now instead of at its next attempt",
        ),
        Binding(
            "h",
            "hold",
            "Hold/release",
            id="scheduled.hold",
            tooltip="Hold a waiting message, or release a held one",
        ),
        *MessageListScreen.LIST_BINDINGS,
    ]
    MUTATIONS: ClassVar[frozenset[str]] = frozenset({"retry_now", "hold", "delete"})

    def action_retry_now(self) -> None:
        if not self.refused() and (row := self.table.selected) is not None:
            self.act("retry_now", row.id)

    def action_hold(self) -> None:
        if not self.refused() and (row := self.table.selected) is not None:
            self.act("release" if row.status == "held" else "hold", row.id)

    @work(group="list-action", exit_on_error=False)
    async def act(self, action: str, message_id: str) -> None:
        method = getattr(self.ctx.ops, action)
        report = await method([message_id], reason="console")
        self.report(
            action.replace("_", " "), report.done, report.skipped, report.failed
        )
        self.load()
