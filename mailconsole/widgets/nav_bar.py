"""The top line: every screen with its key, the current one marked, and the mode.

Dumb: the app says which screens exist and which is current; a click posts
:class:`NavBar.Picked` and the app switches. The current screen is marked with a
class (bold, underlined and reversed), so it stays visible with ``NO_COLOR``.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import Label


class NavItem(Label):
    """One screen's key and name."""

    def __init__(
        self, screen_name: str, key: str, title: str, *, current: bool = False
    ) -> None:
        label = Text.assemble((f" {key} ", "bold"), (f"{title} ", ""))
        super().__init__(
            label,
            id=f"nav-{screen_name}",
            classes="-current" if current else None,
            markup=False,
        )
        self.screen_name = screen_name

    def on_click(self, event: events.Click) -> None:
        event.stop()
        self.post_message(NavBar.Picked(self.screen_name))


class NavBar(Horizontal):
    """Screens and their keys; the current screen has the ``-current`` class."""

    DEFAULT_CSS = """
    NavBar { height: 1; background: $panel; }
    NavBar NavItem { color: $text-muted; }
    NavBar NavItem:hover { background: $boost; }
    NavBar NavItem.-current { color: $text; text-style: bold reverse; }
    NavBar #nav-mode { dock: right; color: $text-muted; padding: 0 1; }
    """

    current: reactive[str] = reactive("")
    """The name of the screen on show."""

    class Picked(Message):
        """The operator clicked the screen ``screen_name``."""

        def __init__(self, screen_name: str) -> None:
            super().__init__()
            self.screen_name = screen_name

    def __init__(
        self,
        items: Sequence[tuple[str, str, str]],
        mode: str,
        *,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(id=id, classes=classes)
        self.items = tuple(items)
        self.mode = mode

    def compose(self) -> ComposeResult:
        # marked here: ``current`` is set before mount, when its watcher cannot
        # reach the items yet
        for screen_name, key, title in self.items:
            yield NavItem(screen_name, key, title, current=screen_name == self.current)
        yield Label(self.mode, id="nav-mode", markup=False)

    def watch_current(self, current: str) -> None:
        for item in self.query(NavItem):
            item.set_class(item.screen_name == current, "-current")
