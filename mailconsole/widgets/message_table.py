"""A paged list of messages: rows come in a page at a time, intent goes out as messages.

The widget never queries anything. Its screen calls :meth:`MessageTable.show` with a
page from ``ops.list_messages``; when the cursor nears the end of what is loaded the
table posts :class:`MessageTable.NeedMore` with the cursor of the next page, so even a
list of 100,000 dead messages only ever holds the rows the operator scrolled through.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import DataTable

from mailconsole.engine.store.dto import MessageSummary
from mailconsole.widgets.formatting import relative
from mailconsole.widgets.safe_text import safe_text

PREFETCH_ROWS = 15
"""Ask for the next page when the cursor is this close to the last loaded row."""


@dataclass(frozen=True)
class Column:
    """One column: a label, a minimum width, a share of spare width, a cell renderer."""

    key: str
    label: str
    width: int
    flex: int
    cell: Callable[[MessageSummary, datetime], Text | str]


def _recipient(row: MessageSummary, _now: datetime) -> str:
    return ", ".join(row.recipients) or "-"


def _attempts(row: MessageSummary, _now: datetime) -> str:
    return str(row.attempts)


def _next(row: MessageSummary, now: datetime) -> str:
    if row.status == "held":
        return "held"
    return relative(row.next_attempt_at, now)


_LEAD_IN = re.compile(r"^[a-z][a-z ,]{0,40}: (?=[2-5]\d\d )")
"""``message refused: `` before the reply code: cut in a narrow column."""


def _error(row: MessageSummary, _now: datetime) -> str:
    if row.last_error is None:
        return "-"
    error = _LEAD_IN.sub("", row.last_error)
    code = str(row.last_code or "")
    if not code or code in error:
        return error
    return f"{code} {error}"


def _when(row: MessageSummary, now: datetime) -> str:
    return relative(row.updated_at, now)


RECIPIENT = Column("to", "Recipient", 14, 2, _recipient)
SUBJECT = Column("subject", "Subject", 10, 3, lambda r, _n: r.subject)
ATTEMPTS = Column("attempts", "#", 2, 0, _attempts)
NEXT = Column("next", "Next try", 9, 0, _next)
LAST_ERROR = Column("error", "Last error", 10, 3, _error)
REASON = Column("reason", "Reason", 10, 6, _error)
WHEN = Column("when", "When", 8, 0, _when)
STATUS = Column("status", "Status", 9, 0, lambda r, _n: r.status)


class MessageTable(DataTable[Text]):
    """Messages, newest first, loaded a page at a time; Enter opens one."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select_cursor", "Open", show=False),
        # DataTable's home/end scroll sideways; in a list of rows an operator expects
        # the first and last row (and the last row asks for the next page).
        Binding("home", "scroll_top", "First row", show=False),
        Binding("end", "scroll_bottom", "Last row", show=False),
    ]

    DEFAULT_CSS = """
    MessageTable { height: 1fr; }
    MessageTable.-empty { display: none; }
    """

    class Chosen(Message):
        """The operator asked to open the message ``message_id`` (Enter or click)."""

        def __init__(self, message_id: str) -> None:
            super().__init__()
            self.message_id = message_id

    class NeedMore(Message):
        """The cursor is near the last loaded row and there is a next page."""

        def __init__(self, table: MessageTable, cursor: str) -> None:
            super().__init__()
            self.table = table
            self.cursor = cursor

        @property
        def control(self) -> MessageTable:
            return self.table

    def __init__(
        self,
        columns: Sequence[Column],
        *,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(
            cursor_type="row", zebra_stripes=False, name=name, id=id, classes=classes
        )
        self.spec = tuple(columns)
        self.rows_loaded: list[MessageSummary] = []
        self.next_cursor: str | None = None
        self._asked_for: str | None = None
        self._now: datetime | None = None
        self._width = 0

    @property
    def selected_id(self) -> str | None:
        """The id of the message under the cursor, if any."""
        if not self.rows_loaded or self.cursor_row >= len(self.rows_loaded):
            return None
        return self.rows_loaded[max(self.cursor_row, 0)].id

    @property
    def selected(self) -> MessageSummary | None:
        if not self.rows_loaded or self.cursor_row >= len(self.rows_loaded):
            return None
        return self.rows_loaded[max(self.cursor_row, 0)]

    def show(
        self,
        rows: Sequence[MessageSummary],
        next_cursor: str | None,
        now: datetime,
        *,
        append: bool = False,
    ) -> None:
        """Display a page: replace what is shown, or append the next page."""
        self._now = now
        self.next_cursor = next_cursor
        self._asked_for = None
        if append:
            known = {row.id for row in self.rows_loaded}
            fresh = [row for row in rows if row.id not in known]
            self.rows_loaded.extend(fresh)
            self._add(fresh, now)
            return
        keep = self.selected_id
        self.rows_loaded = list(rows)
        self._rebuild(keep)

    def _rebuild(self, keep: str | None) -> None:
        row_index = self.cursor_row
        self.clear(columns=True)
        for column, width in zip(self.spec, self._widths(), strict=True):
            self.add_column(column.label, width=width, key=column.key)
        self._add(self.rows_loaded, self._now)
        ids = [row.id for row in self.rows_loaded]
        if keep in ids:
            row_index = ids.index(keep)
        if ids:
            self.move_cursor(row=min(max(row_index, 0), len(ids) - 1), animate=False)

    def _add(self, rows: Sequence[MessageSummary], now: datetime | None) -> None:
        moment = now or datetime.now()
        widths = [column.width for column in self.columns.values()]
        for row in rows:
            cells = [
                safe_text(str(c.cell(row, moment)), single_line=True, max_length=w)
                for c, w in zip(self.spec, widths, strict=True)
            ]
            self.add_row(*cells, key=row.id)

    def _widths(self) -> list[int]:
        """Minimum widths, plus spare width shared out by each column's ``flex``."""
        padding = 2 * self.cell_padding * len(self.spec) + 2
        spare = max(self.size.width - padding - sum(c.width for c in self.spec), 0)
        total_flex = sum(c.flex for c in self.spec) or 1
        widths = [c.width + spare * c.flex // total_flex for c in self.spec]
        return widths

    def on_resize(self) -> None:
        if self.size.width != self._width:
            self._width = self.size.width
            self._rebuild(self.selected_id)

    def on_data_table_row_highlighted(self, _event: DataTable.RowHighlighted) -> None:
        self._maybe_ask_for_more()

    def _maybe_ask_for_more(self) -> None:
        cursor = self.next_cursor
        if cursor is None or cursor == self._asked_for:
            return
        if self.cursor_row >= len(self.rows_loaded) - PREFETCH_ROWS:
            self._asked_for = cursor
            self.post_message(self.NeedMore(self, cursor))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value is not None:
            self.post_message(self.Chosen(event.row_key.value))
