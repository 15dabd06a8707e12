"""The command palette's console commands: every screen, and every action the current
screen allows right now (read-only and state rules apply, as for its keys).

Built from the bindings, so a new binding is in the palette without extra work.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

from mailconsole.screens.base import ConsoleScreen, nav_items

Command = tuple[str, str, str]
"""(title, help, action string run on the screen)"""


def screen_commands(screen: object) -> Iterator[Command]:
    """The actions of ``screen`` that are enabled now, from its bindings."""
    if not isinstance(screen, ConsoleScreen):
        return
    seen: set[str] = set()
    for bindings in screen._bindings.key_to_bindings.values():
        for binding in bindings:
            name, _, _ = binding.action.partition("(")
            if binding.action in seen or screen.check_action(name, ()) is False:
                continue
            if not hasattr(screen, f"action_{name}"):
                continue
            seen.add(binding.action)
            detail = binding.tooltip or binding.description
            yield (binding.description, f"{detail} ({binding.key})", binding.action)


class ConsoleCommands(Provider):
    """Go to a screen; run an action of the screen on show."""

    def commands(self) -> list[tuple[str, str, partial[None]]]:
        found: list[tuple[str, str, partial[None]]] = []
        screen = self.screen
        ctx = getattr(screen, "ctx", None)
        if ctx is not None:
            for name, key, title in nav_items(ctx):
                found.append(
                    (
                        f"Go to {title}",
                        f"screen ({key})",
                        partial(
                            self.app.call_next, self.app.run_action, f"show({name!r})"
                        ),
                    )
                )
        for title, help_text, action in screen_commands(screen):
            found.append(
                (
                    title,
                    help_text,
                    partial(self.app.call_next, screen.run_action, action),
                )
            )
        found.append(
            (
                "Toggle light/dark theme",
                "theme (ctrl+t)",
                partial(self.app.call_next, self.app.run_action, "toggle_theme"),
            )
        )
        found.append(
            (
                "Show keys",
                "help (?)",
                partial(self.app.call_next, self.app.run_action, "help"),
            )
        )
        return found

    async def discover(self) -> Hits:
        for title, help_text, callback in self.commands():
            yield DiscoveryHit(title, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, callback in self.commands():
            if (score := matcher.match(title)) > 0:
                yield Hit(score, matcher.highlight(title), callback, help=help_text)
