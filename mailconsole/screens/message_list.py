"""A filtered, paged list of messages from the store: the base of Scheduled and Dead.

Rows come a page at a time from ``ops.list_messages`` (a cursor, never everything);
the filter box re-queries as the operator types (debounced, the previous query
cancelled, late results dropped). Engine events only mark the list stale; it is
re-read at most once a second, and only while it is on screen.
"""

from __future__ import annotations

import shlex
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.timer import Timer
from textual.widgets import Footer, Input, Static

from mailconsole.engine.errors import MailconsoleError
from mailconsole.messages import EngineEvents
from mailconsole.screens.base import ConsoleScreen
from mailconsole.screens.confirm import ConfirmModal
from mailconsole.screens.context import ConsoleContext
from mailconsole.screens.message_detail import MessageDetailScreen
from mailconsole.widgets.formatting import count
from mailconsole.widgets.message_table import Column, MessageTable
from mailconsole.widgets.safe_text import safe_join, visible

PAGE_SIZE = 200
FILTER_DELAY = 0.15
"""Seconds of quiet typing before the filter re-queries."""
STALE_CHECK = 1.0
OBSERVE_POLL = 5.0
"""Without an engine in this process nothing announces changes: poll this often."""


class MessageListScreen(ConsoleScreen):
    """Messages matching ``BASE_QUERY`` plus the operator's filter."""

    CSS_PATH = "message_list.tcss"

    BASE_QUERY: ClassVar[str] = ""
    TITLE_TEXT: ClassVar[str] = ""
    COLUMNS: ClassVar[tuple[Column, ...]] = ()
    EMPTY_TEXT: ClassVar[str] = "Nothing here."

    AUTO_FOCUS = "#messages"
    LIST_BINDINGS: ClassVar[list[Binding]] = [
        Binding(
            "slash", "filter", "Filter", id="list.filter", tooltip="Filter as you type"
        ),
        Binding("escape", "clear_filter", "Clear filter", show=False, id="list.clear"),
        Binding("ctrl+r", "reload", "Reload", show=False, id="list.reload"),
        Binding(
            "x,delete",
            "delete",
            "Delete",
            id="list.delete",
            show=False,
            tooltip="Delete the message (asks first)",
        ),
        Binding(
            "y",
            "cli",
            "CLI",
            show=False,
            id="list.cli",
            tooltip="Show the equivalent CLI command",
        ),
    ]

    def __init__(self, ctx: ConsoleContext) -> None:
        super().__init__(ctx)
        self.filter_text = ""
        self.total: int | None = None
        self.problem: str | None = None
        self._stale = False
        self._debounce: Timer | None = None

    @property
    def filter_query(self) -> str:
        """The filter sent to ops: this screen's scope plus what the operator typed."""
        return f"{self.BASE_QUERY} {self.filter_text}".strip()

    @property
    def table(self) -> MessageTable:
        return self.query_one("#messages", MessageTable)

    def compose(self) -> ComposeResult:
        yield self.nav_bar()
        yield Static(id="list-title", markup=False)
        yield Input(
            placeholder='filter: to:@example.com code:550 since:2h text:"mailbox full"',
            id="filter",
            classes="-hidden",
            compact=True,
        )
        yield from self.compose_body()
        yield Static(Text(self.EMPTY_TEXT), id="empty", classes="-hidden", markup=False)
        yield Footer(show_command_palette=False)

    def compose_body(self) -> ComposeResult:
        yield MessageTable(self.COLUMNS, id="messages")

    def on_mount(self) -> None:
        self.set_interval(
            OBSERVE_POLL if self.ctx.observing else STALE_CHECK, self._tick
        )
        self.update_title()
        self.load()

    def on_screen_resume(self) -> None:
        if self._stale:
            self.load()

    def on_engine_events(self, message: EngineEvents) -> None:
        if message.lists_changed:
            self._stale = True

    def _tick(self) -> None:
        if (self._stale or self.ctx.observing) and self.is_current:
            self.load()

    # -- loading ----------------------------------------------------------------------
    @work(exclusive=True, group="list-load", exit_on_error=False)
    async def load(self) -> None:
        """Read the first page of the current filter (and, separately, its count)."""
        self._stale = False
        query = self.filter_query
        try:
            page = await self.ctx.ops.list_messages(query, limit=PAGE_SIZE)
        except MailconsoleError as exc:
            self.problem = str(exc)
            self.update_title()
            return
        if query != self.filter_query:
            return
        self.problem = None
        self.table.show(page.items, page.next_cursor, self.now())
        self.show_empty(not page.items)
        self.count_matches(query)

    @work(exclusive=True, group="list-count", exit_on_error=False)
    async def count_matches(self, query: str) -> None:
        total = await self.ctx.ops.count(query)
        if query == self.filter_query:
            self.total = total
            self.update_title()

    @on(MessageTable.NeedMore)
    def more(self, event: MessageTable.NeedMore) -> None:
        self.load_more(self.filter_query, event.cursor)

    @work(group="list-more", exit_on_error=False)
    async def load_more(self, query: str, cursor: str) -> None:
        page = await self.ctx.ops.list_messages(query, limit=PAGE_SIZE, cursor=cursor)
        if query == self.filter_query and cursor == self.table.next_cursor:
            self.table.show(page.items, page.next_cursor, self.now(), append=True)

    def show_empty(self, empty: bool) -> None:
        self.query_one("#empty").set_class(not empty, "-hidden")
        self.table.set_class(empty, "-empty")

    def update_title(self) -> None:
        parts: list[tuple[str | None, str]] = [(self.TITLE_TEXT, "bold")]
        parts.append(
            (f"  {count(self.total)} matching" if self.total is not None else "", "dim")
        )
        if self.filter_text:
            parts += [("  filter ", "dim"), (self.filter_text, "")]
        if self.problem:
            parts += [("  ", ""), (self.problem, "bold reverse")]
        self.query_one("#list-title", Static).update(safe_join(parts))

    # -- filtering --------------------------------------------------------------------
    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.remove_class("-hidden")
        box.focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        if box.value:
            box.value = ""
        else:
            box.add_class("-hidden")
            self.table.focus()

    def action_reload(self) -> None:
        self.load()

    @on(Input.Changed, "#filter")
    def filter_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value.strip()
        if self._debounce is not None:
            self._debounce.stop()
        self._debounce = self.set_timer(FILTER_DELAY, self.load)
        self.update_title()

    @on(Input.Submitted, "#filter")
    def filter_done(self) -> None:
        self.table.focus()

    def cli_command(self, verb: str = "list") -> str:
        """The CLI command doing the same over the current filter."""
        every = " --all" if verb != "list" else ""
        return f"mailconsole {verb}{every} --search {shlex.quote(self.filter_query)}"

    def action_cli(self) -> None:
        command = self.cli_command(
            "replay" if self.BASE_QUERY == "status:dead" else "list"
        )
        self.app.copy_to_clipboard(command)
        self.notify(
            visible(command),
            title="Equivalent command (copied)",
            markup=False,
            timeout=15,
        )

    # -- actions on the selected message ----------------------------------------------
    @on(MessageTable.Chosen)
    def open_message(self, event: MessageTable.Chosen) -> None:
        self.app.push_screen(MessageDetailScreen(self.ctx, event.message_id, self.NAV))

    def action_delete(self) -> None:
        if not self.refused() and (row := self.table.selected) is not None:
            self.delete(row.id, row.subject)

    @work(group="list-action", exit_on_error=False)
    async def delete(self, message_id: str, subject: str) -> None:
        question = safe_join(
            [("Delete ", ""), (message_id, "bold"), ("  ", ""), (subject, "italic")]
        )
        if not await self.app.push_screen_wait(
            ConfirmModal("Delete message", question, "Delete")
        ):
            return
        report = await self.ctx.ops.delete([message_id], reason="console")
        self.report(report.action, report.done, report.skipped, report.failed)
        self.load()

    def report(
        self,
        action: str,
        done: tuple[str, ...],
        skipped: tuple[tuple[str, str], ...],
        failed: tuple[tuple[str, str], ...] = (),
    ) -> None:
        """Tell the operator what an action did, with the first refusal's reason."""
        text = f"{action}: {len(done)} done"
        trouble = [*skipped, *failed]
        if trouble:
            text += f", {len(trouble)} not ({trouble[0][0]}: {trouble[0][1]})"
        self.notify(
            visible(text),
            severity="warning" if trouble else "information",
            markup=False,
        )
