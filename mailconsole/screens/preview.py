"""A composed message as it would be sent: problems, headers, text, html source.

Shows an ``ops.preview`` result; the content is operator-typed or template output,
still shown through the sanitiser like everything else.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Label

from mailconsole.engine.ops import Preview
from mailconsole.screens.message_detail import headers_text
from mailconsole.widgets.safe_text import SafeText, safe_text


class PreviewModal(ModalScreen[None]):
    """The rendered message; any key in the footer or Escape closes it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "close", "Close", id="preview.close")
    ]

    def __init__(self, preview: Preview, problems: list[str]) -> None:
        super().__init__()
        self.preview = preview
        self.problems = [*problems, *preview.errors]

    def compose(self) -> ComposeResult:
        p = self.preview
        with Vertical(classes="dialog -wide"):
            yield Label(
                f"Preview · {p.size:,} bytes", classes="dialog-title", markup=False
            )
            with VerticalScroll():
                if self.problems:
                    yield SafeText(
                        Text("\n").join(safe_text(f"✗ {x}") for x in self.problems),
                        classes="problems",
                    )
                yield Label("Headers", classes="section")
                yield SafeText(headers_text(p))
                yield Label("Text", classes="section")
                yield SafeText(p.text if p.text is not None else "(no text part)")
                yield Label("HTML source", classes="section")
                yield SafeText(p.html if p.html is not None else "(no html part)")
        yield Footer(show_command_palette=False)

    def action_close(self) -> None:
        self.dismiss(None)
