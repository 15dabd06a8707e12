"""Help (``?``): every key binding of the screen underneath, then the global ones.

Built from the bindings themselves (hidden ones too), so it cannot drift from what
the keys do; bindings the screen disables (read-only, wrong state) are left out.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Label, Static

HelpRow = tuple[str, str, str]
"""(keys, what it does, more detail)"""


def help_table(sections: Iterable[tuple[str, list[HelpRow]]]) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    for title, rows in sections:
        if not rows:
            continue
        table.add_row(Text(title, style="bold underline"), "")
        for keys, what, detail in rows:
            line = Text(what)
            if detail:
                line.append(f"  {detail}", style="dim")
            table.add_row(Text(keys), line)
        table.add_row("", "")
    return table


class HelpModal(ModalScreen[None]):
    """Key bindings, grouped: this screen, then everywhere."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark", "close", "Close", id="help.close")
    ]

    def __init__(self, title: str, sections: list[tuple[str, list[HelpRow]]]) -> None:
        super().__init__()
        self.title_text = title
        self.sections = sections

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog -wide"):
            yield Label(
                f"Keys · {self.title_text}", classes="dialog-title", markup=False
            )
            with VerticalScroll():
                yield Static(help_table(self.sections), markup=False)
        yield Footer(show_command_palette=False)

    def action_close(self) -> None:
        self.dismiss(None)
