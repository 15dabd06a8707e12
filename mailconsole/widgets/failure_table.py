"""Dead messages grouped by failure cause, largest group first.

Dumb: the screen passes ``FailureGroup`` records from ``ops.failures``; Enter posts
:class:`FailureTable.Chosen` with the group's key (usable as ``group:<key>``).
Replies and domains come from remote servers and are sanitised.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import DataTable

from mailconsole.engine.ops import FailureGroup
from mailconsole.widgets.formatting import count, relative
from mailconsole.widgets.safe_text import safe_text

# (label, minimum width, flex)
_COLUMNS = (
    ("Count", 7, 0),
    ("Code", 9, 0),
    ("Domain", 12, 1),
    ("Cause", 16, 4),
    ("Last", 8, 0),
)


def group_cells(group: FailureGroup, now: datetime) -> list[str]:
    code = " ".join(str(v) for v in (group.code, group.enhanced) if v) or "-"
    return [
        count(group.count),
        code,
        group.domain,
        group.reply,
        relative(group.last_seen, now),
    ]


class FailureTable(DataTable[Text]):
    """Failure groups; Enter narrows the dead list to the chosen group."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select_cursor", "Show group", show=False),
        # as in MessageTable: first and last row, not a sideways scroll
        Binding("home", "scroll_top", "First row", show=False),
        Binding("end", "scroll_bottom", "Last row", show=False),
    ]

    DEFAULT_CSS = """
    FailureTable { height: 1fr; }
    """

    class Chosen(Message):
        """The operator picked the group ``key``."""

        def __init__(self, key: str) -> None:
            super().__init__()
            self.key = key

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(cursor_type="row", id=id, classes=classes)
        self.groups: list[FailureGroup] = []
        self._now: datetime | None = None

    @property
    def selected(self) -> FailureGroup | None:
        if not self.groups or self.cursor_row >= len(self.groups):
            return None
        return self.groups[max(self.cursor_row, 0)]

    def show(self, groups: Sequence[FailureGroup], now: datetime) -> None:
        """Display the groups (already sorted, largest first)."""
        self.groups, self._now = list(groups), now
        self._rebuild()

    def _widths(self) -> list[int]:
        spare = max(
            self.size.width - 2 * len(_COLUMNS) - 2 - sum(c[1] for c in _COLUMNS), 0
        )
        flex = sum(c[2] for c in _COLUMNS)
        return [width + spare * share // flex for _label, width, share in _COLUMNS]

    def _rebuild(self) -> None:
        row = self.cursor_row
        self.clear(columns=True)
        widths = self._widths()
        for (label, _w, _f), width in zip(_COLUMNS, widths, strict=True):
            self.add_column(label, width=width)
        now = self._now or datetime.now()
        for group in self.groups:
            cells = group_cells(group, now)
            self.add_row(
                *(
                    safe_text(c, single_line=True, max_length=w)
                    for c, w in zip(cells, widths, strict=True)
                ),
                key=group.key,
            )
        if self.groups:
            self.move_cursor(row=min(max(row, 0), len(self.groups) - 1), animate=False)

    def on_resize(self) -> None:
        self._rebuild()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value is not None:
            self.post_message(self.Chosen(event.row_key.value))
