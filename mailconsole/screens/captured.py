"""Captured (demo only): the mail the demo's SMTP capture server received.

The list on top, the highlighted message as received (headers and body, raw) below.
Everything here came over SMTP, so it is all shown through the sanitiser.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Footer, Static

from mailconsole.screens.base import ConsoleScreen
from mailconsole.widgets.formatting import relative
from mailconsole.widgets.safe_text import SafeText, safe_text

SHOWN = 500
POLL = 1.0
COLUMNS = (
    ("#", 4, 0),
    ("When", 8, 0),
    ("From", 12, 1),
    ("To", 14, 1),
    ("Subject", 14, 2),
)
"""(label, minimum width, share of the spare width)"""


class CapturedScreen(ConsoleScreen):
    """Mail received by the demo relay, newest first."""

    CSS_PATH = "message_list.tcss"

    NAV = "captured"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "enter", "read", "Read", id="captured.read", tooltip="Scroll the message"
        ),
        Binding("escape", "list", "List", show=False, id="captured.list"),
    ]

    _version = -1

    def compose(self) -> ComposeResult:
        yield self.nav_bar()
        yield Static(
            Text("Captured by the demo relay", style="bold"),
            id="list-title",
            markup=False,
        )
        yield DataTable[Text](id="captured", cursor_type="row")
        with VerticalScroll(id="captured-body"):
            yield SafeText(Text("nothing captured yet", style="dim"), id="raw")
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        self.set_interval(POLL, self.refresh_list)

    def on_resize(self) -> None:
        self._version = -1  # widths follow the terminal: rebuild
        self.refresh_list()

    def _columns(self, table: DataTable[Text]) -> list[int]:
        spare = max(
            self.size.width - 2 * len(COLUMNS) - 2 - sum(c[1] for c in COLUMNS), 0
        )
        flex = sum(c[2] for c in COLUMNS)
        widths = [width + spare * share // flex for _label, width, share in COLUMNS]
        table.clear(columns=True)
        for (label, _w, _s), width in zip(COLUMNS, widths, strict=True):
            table.add_column(label, width=width)
        return widths

    def refresh_list(self) -> None:
        capture = self.ctx.capture
        if capture is None or capture.version == self._version or not self.is_current:
            return
        self._version = capture.version
        table = self.query_one(DataTable)
        keep = table.cursor_row
        widths = self._columns(table)
        now = self.now()
        for mail in capture.latest(SHOWN):
            cells = (
                str(mail.number),
                relative(mail.received_at, now),
                mail.mail_from,
                ", ".join(mail.rcpt_tos),
                mail.subject,
            )
            texts = (
                safe_text(c, single_line=True, max_length=w)
                for c, w in zip(cells, widths, strict=True)
            )
            table.add_row(*texts, key=str(mail.number))
        if table.row_count:
            table.move_cursor(row=min(keep, table.row_count - 1))

    def on_screen_resume(self) -> None:
        self.refresh_list()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        capture = self.ctx.capture
        if capture is None or event.row_key.value is None:
            return
        mail = capture.get(int(event.row_key.value))
        if mail is not None:
            raw = mail.data.decode("utf-8", errors="backslashreplace")
            self.query_one("#raw", SafeText).show(raw.replace("\r\n", "\n"))

    def action_read(self) -> None:
        self.query_one("#captured-body").focus()

    def action_list(self) -> None:
        self.query_one(DataTable).focus()
