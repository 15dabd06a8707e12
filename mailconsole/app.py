"""MailConsoleApp: the operations console's shell.

It owns the screens (one mode each, so every screen keeps its filter and cursor when
you switch away), the global keys, the command palette and the one event worker that
reads ``ops.events()`` and hands the screens a batch a few times a second. It never
starts or stops the engine (``cli/console.py`` does, around ``run_async``) and
never talks to the store except through the ops API the screens call.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from typing import ClassVar

from textual import work
from textual.app import App
from textual.binding import Binding
from textual.screen import Screen
from textual.theme import Theme
from textual.worker import Worker, WorkerState

from mailconsole.commands import ConsoleCommands
from mailconsole.engine.events import Event
from mailconsole.messages import EngineEvents
from mailconsole.screens.base import SCREENS, ConsoleScreen, error_text, nav_items
from mailconsole.screens.captured import CapturedScreen
from mailconsole.screens.compose import ComposeScreen
from mailconsole.screens.context import ConsoleContext
from mailconsole.screens.dead import DeadScreen
from mailconsole.screens.help import HelpModal, HelpRow
from mailconsole.screens.queue import QueueScreen
from mailconsole.screens.retries import RetriesScreen
from mailconsole.widgets.safe_text import visible

EVENT_FLUSH_HZ = 4
"""Batches of engine events handed to the screens per second, at most."""
EVENT_BUFFER = 2_000
"""Events kept between two flushes; older ones are counted as dropped."""

SCREEN_CLASSES: dict[str, type[ConsoleScreen]] = {
    "live": QueueScreen,
    "scheduled": RetriesScreen,
    "dead": DeadScreen,
    "compose": ComposeScreen,
    "captured": CapturedScreen,
}

DARK = Theme(
    name="mailconsole-dark",
    primary="#7aa2c8",
    secondary="#8fa5b8",
    accent="#c8a26e",
    foreground="#d6d9dc",
    background="#1c1f22",
    surface="#23272b",
    panel="#2b3035",
    success="#8fb58a",
    warning="#d2b36b",
    error="#d47a76",
    dark=True,
)
LIGHT = Theme(
    name="mailconsole-light",
    primary="#3b6a96",
    secondary="#5c7185",
    accent="#9a6b2f",
    foreground="#24292e",
    background="#f7f7f5",
    surface="#eeeeea",
    panel="#e2e3df",
    success="#4c7a47",
    warning="#8a6a1c",
    error="#a8423d",
    dark=False,
)


class MailConsoleApp(App[None]):
    """The operations console over one ops API."""

    CSS_PATH = "app.tcss"
    TITLE = "mailconsole"
    COMMANDS = App.COMMANDS | {ConsoleCommands}
    BINDINGS: ClassVar[list[Binding | tuple[str, str] | tuple[str, str, str]]] = [
        *(
            Binding(
                key,
                f"show({name!r})",
                title,
                id=f"app.{name}",
                group=Binding.Group("screens", compact=True),
            )
            for name, key, title in SCREENS
        ),
        Binding("question_mark", "help", "Help", id="app.help"),
        Binding("ctrl+t", "toggle_theme", "Theme", show=False, id="app.theme"),
    ]

    def __init__(
        self,
        ctx: ConsoleContext,
        *,
        on_close: Callable[[], Awaitable[None]] | None = None,
        start: str = "live",
        theme: str = "mailconsole-dark",
    ) -> None:
        super().__init__()
        self.ctx = ctx
        self.on_close = on_close
        self.start_screen = start
        self._pending: deque[Event] = deque(maxlen=EVENT_BUFFER)
        self._dropped = 0
        for name, _key, _title in nav_items(ctx):
            self.add_mode(name, self._factory(name))
        self.register_theme(DARK)
        self.register_theme(LIGHT)
        self.theme = theme

    def _factory(self, name: str) -> Callable[[], Screen[None]]:
        return lambda: SCREEN_CLASSES[name](self.ctx)

    def on_mount(self) -> None:
        self.switch_mode(self.start_screen)
        self.bridge_events()
        self.set_interval(1 / EVENT_FLUSH_HZ, self.flush_events)

    async def on_unmount(self) -> None:
        if self.on_close is not None:
            await self.on_close()

    # -- engine events ----------------------------------------------------------------
    @work(group="engine-events", exit_on_error=False)
    async def bridge_events(self) -> None:
        """The one reader of ``ops.events()``: buffer now, hand over in batches."""
        async for event in self.ctx.ops.events():
            if len(self._pending) == self._pending.maxlen:
                self._dropped += 1
            self._pending.append(event)

    def flush_events(self) -> None:
        """Post what arrived since the last flush to every open screen, once."""
        if not self._pending and not self._dropped:
            return
        batch, dropped = tuple(self._pending), self._dropped
        self._pending.clear()
        self._dropped = 0
        for screen in self.open_screens():
            screen.post_message(EngineEvents(batch, dropped))

    def open_screens(self) -> list[Screen[object]]:
        found: list[Screen[object]] = []
        for name, _key, _title in nav_items(self.ctx):
            try:
                found += self.get_screen_stack(name)
            except KeyError:
                continue  # a mode not opened yet has no screens to tell
        return found

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state is WorkerState.ERROR:
            message = visible(error_text(event.worker.error))
            self.notify(message, title="Console error", severity="error", markup=False)

    # -- actions ----------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "show" and parameters:
            return parameters[0] in {name for name, _k, _t in nav_items(self.ctx)}
        return True

    async def action_show(self, name: str) -> None:
        """Go to a top-level screen (its mode), closing a modal on top first."""
        if name not in SCREEN_CLASSES or not self.check_action("show", (name,)):
            return
        if self.current_mode == name:
            while len(self.screen_stack) > 1:
                await self.pop_screen()
            return
        await self.switch_mode(name)

    def action_help(self) -> None:
        screen = self.screen
        if isinstance(screen, HelpModal):
            return
        title = getattr(screen, "nav_name", "") or type(screen).__name__
        sections = [
            ("This screen", self.binding_rows(screen)),
            ("Everywhere", self.binding_rows(self)),
        ]
        self.push_screen(HelpModal(str(title), sections))

    def binding_rows(self, node: App[None] | Screen[object]) -> list[HelpRow]:
        """Every binding of ``node`` the node allows now, one row per action."""
        rows: dict[str, HelpRow] = {}
        for bindings in node._bindings.key_to_bindings.values():
            for binding in bindings:
                name, _, _ = binding.action.partition("(")
                parameters = tuple(_literal(binding.action))
                if (
                    not binding.description
                    or node.check_action(name, parameters) is False
                ):
                    continue
                keys = self.get_key_display(binding)
                if binding.action in rows:
                    known = rows[binding.action]
                    rows[binding.action] = (f"{known[0]}, {keys}", known[1], known[2])
                else:
                    rows[binding.action] = (keys, binding.description, binding.tooltip)
        return list(rows.values())

    def action_toggle_theme(self) -> None:
        self.theme = (
            "mailconsole-light" if self.current_theme.dark else "mailconsole-dark"
        )


def _literal(action: str) -> list[object]:
    """The parameters of an action string such as ``show('dead')``."""
    _, _, rest = action.partition("(")
    inner = rest.rstrip(")").strip()
    return [inner.strip("'\"")] if inner else []
