"""The live tail: one line per delivery, failure and operator action, newest last.

Fed batches of engine events by its screen; keeps a bounded number of lines so an
engine sending at full speed costs the UI a few appends a second, not a growing log.
Recipients and reasons are untrusted and go through the sanitiser.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.text import Text
from textual.widgets import RichLog

from mailconsole.engine.events import (
    AttemptFailed,
    EngineStateChanged,
    Event,
    EventsDropped,
    MessageSent,
    OperatorActed,
)
from mailconsole.widgets.formatting import count
from mailconsole.widgets.safe_text import safe_join

MAX_LINES = 500
MAX_PER_BATCH = 40
"""More events than this in one batch are summarised, not listed one by one."""


def event_line(event: Event) -> Text | None:
    """One line describing ``event``, or ``None`` when it is not worth a line."""
    stamp = (event.at.strftime("%H:%M:%S") + " ", "dim")
    if isinstance(event, MessageSent):
        recipients = ", ".join(event.recipients)
        parts = [
            ("sent   ", "bold"),
            (event.message_id, ""),
            (" → ", "dim"),
            (recipients, ""),
        ]
        parts.append((f"  {event.duration_ms} ms", "dim"))
    elif isinstance(event, AttemptFailed):
        word = "DEAD   " if event.status == "dead" else "retry  "
        parts = [(word, "bold reverse" if event.status == "dead" else "bold")]
        parts += [(event.message_id, ""), ("  ", ""), (event.reason, "italic")]
    elif isinstance(event, OperatorActed):
        what = f"{event.action} ×{count(event.count or len(event.message_ids))}"
        parts = [("action ", "bold underline"), (what, "")]
    elif isinstance(event, EngineStateChanged):
        state = "ok" if event.healthy else "DOWN"
        parts = [
            ("engine ", "bold"),
            (f"{event.component} {state}: ", ""),
            (event.detail, ""),
        ]
    elif isinstance(event, EventsDropped):
        parts = [("…      ", "dim"), (f"{count(event.count)} events not shown", "dim")]
    else:
        return None
    return safe_join([stamp, *parts])


class EventTail(RichLog):
    """Latest deliveries and failures; the screen calls :meth:`add` with a batch."""

    DEFAULT_CSS = """
    EventTail { height: 1fr; }
    """

    def __init__(
        self,
        *,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(
            max_lines=MAX_LINES,
            markup=False,
            highlight=False,
            wrap=False,
            auto_scroll=True,
            name=name,
            id=id,
            classes=classes,
        )

    def add(self, events: Iterable[Event]) -> None:
        """Append a line per event; a flood becomes a summary line."""
        lines = [line for line in map(event_line, events) if line is not None]
        hidden = len(lines) - MAX_PER_BATCH
        if hidden > 0:
            lines = lines[-MAX_PER_BATCH:]
            self.write(Text(f"… {count(hidden)} more in this second", style="dim"))
        for line in lines:
            self.write(line)
