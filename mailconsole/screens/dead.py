"""Dead letters: inspect, replay, edit-then-replay or delete; in bulk by filter or cause.

``/`` filters as you type in the CLI's filter language; ``g`` groups the list by
failure cause (largest first) and Enter on a group narrows the list to it. Bulk
replay and delete act on everything the filter (or the selected group) shows, after
a plan and a confirmation that states the count. ``y`` shows the equivalent CLI.
"""

from __future__ import annotations

from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType

from mailconsole.screens.bulk import BulkModal
from mailconsole.screens.context import ConsoleContext
from mailconsole.screens.edit import EditModal
from mailconsole.screens.message_list import MessageListScreen
from mailconsole.widgets.failure_table import FailureTable
from mailconsole.widgets.message_table import (
    ATTEMPTS,
    REASON,
    RECIPIENT,
    SUBJECT,
    WHEN,
    MessageTable,
)
from mailconsole.widgets.safe_text import visible


class DeadScreen(MessageListScreen):
    """Dead messages, newest first, or their failure causes, largest first."""

    NAV = "dead"
    BASE_QUERY = "status:dead"
    TITLE_TEXT = "Dead letters"
    COLUMNS = (RECIPIENT, SUBJECT, REASON, ATTEMPTS, WHEN)
    EMPTY_TEXT = "No dead letters match."
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "r",
            "replay",
            "Replay",
            id="dead.replay",
            tooltip="Re-queue the selected message",
        ),
        Binding(
            "e",
            "edit",
            "Edit",
            id="dead.edit",
            tooltip="Correct the message, then replay the copy",
        ),
        Binding(
            "g",
            "group",
            "Causes",
            id="dead.group",
            tooltip="Group by failure cause (toggle)",
        ),
        Binding(
            "R",
            "bulk('replay')",
            "Replay all",
            id="dead.bulk_replay",
            tooltip="Replay everything the filter or group shows",
        ),
        Binding(
            "X",
            "bulk('delete')",
            "Delete all",
            id="dead.bulk_delete",
            show=False,
            tooltip="Delete everything the filter or group shows",
        ),
        *MessageListScreen.LIST_BINDINGS,
    ]
    MUTATIONS: ClassVar[frozenset[str]] = frozenset(
        {"replay", "edit", "delete", "bulk"}
    )

    def __init__(self, ctx: ConsoleContext) -> None:
        super().__init__(ctx)
        self.grouped = False

    def compose_body(self) -> ComposeResult:
        yield MessageTable(self.COLUMNS, id="messages")
        yield FailureTable(id="groups", classes="-hidden")

    @property
    def groups(self) -> FailureTable:
        return self.query_one("#groups", FailureTable)

    def load(self) -> None:  # type: ignore[override]  # both loaders are workers
        if self.grouped:
            self.load_groups()
        else:
            super().load()

    @work(exclusive=True, group="list-load", exit_on_error=False)
    async def load_groups(self) -> None:
        self._stale = False
        query = self.filter_query
        groups = await self.ctx.ops.failures(query)
        if query == self.filter_query and self.grouped:
            self.groups.show(groups, self.now())
            self.show_empty(not groups)

    def show_empty(self, empty: bool) -> None:
        super().show_empty(empty)
        self.table.set_class(self.grouped, "-hidden")
        self.groups.set_class(not self.grouped, "-hidden")

    def action_group(self) -> None:
        self.grouped = not self.grouped
        self.show_empty(False)
        (self.groups if self.grouped else self.table).focus()
        self.load()

    @on(FailureTable.Chosen)
    def group_chosen(self, event: FailureTable.Chosen) -> None:
        box = self.query_one("#filter")
        box.remove_class("-hidden")
        self.grouped = False
        box.value = f"group:{event.key}"  # type: ignore[attr-defined]  # an Input
        self.show_empty(False)
        self.table.focus()

    def bulk_query(self) -> str:
        """What a bulk action covers: the filter, narrowed to the selected group."""
        group = self.groups.selected if self.grouped else None
        return f"{self.filter_query} group:{group.key}" if group else self.filter_query

    def cli_command(self, verb: str = "replay") -> str:
        saved, self.filter_text = (
            self.filter_text,
            self.bulk_query().removeprefix(self.BASE_QUERY).strip(),
        )
        try:
            return super().cli_command(verb)
        finally:
            self.filter_text = saved

    # -- actions ----------------------------------------------------------------------
    def action_replay(self) -> None:
        if (
            not self.refused()
            and (row := self.table.selected) is not None
            and not self.grouped
        ):
            self.replay(row.id)

    @work(group="list-action", exit_on_error=False)
    async def replay(self, message_id: str) -> None:
        report = await self.ctx.ops.replay([message_id], reason="console")
        self.report("replay", report.done, report.skipped, report.failed)
        self.load()

    def action_edit(self) -> None:
        if (
            not self.refused()
            and (row := self.table.selected) is not None
            and not self.grouped
        ):
            self.edit(row.id)

    @work(group="list-action", exit_on_error=False)
    async def edit(self, message_id: str) -> None:
        new_id = await self.app.push_screen_wait(EditModal(self.ctx, message_id))
        if new_id:
            self.notify(
                visible(f"edited copy {new_id} queued; {message_id} kept"), markup=False
            )
            self.load()

    def action_bulk(self, action: str) -> None:
        if not self.refused():
            self.bulk(action)

    @work(group="list-action", exit_on_error=False)
    async def bulk(self, action: str) -> None:
        await self.app.push_screen_wait(
            BulkModal(self.ctx, action, self.bulk_query(), "dead messages")
        )
        self.load()
