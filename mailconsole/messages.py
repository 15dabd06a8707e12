"""Textual messages that carry engine events into the console.

The app's one event worker reads ``ops.events()`` into a buffer and, a few times a
second, posts one :class:`EngineEvents` to each open screen: never one message per
delivery, so a hosted engine sending at full speed cannot flood the UI. Nothing here
talks to the engine; these are plain carriers of its frozen event records.
"""

from __future__ import annotations

from collections.abc import Iterable

from textual.message import Message

from mailconsole.engine.events import (
    AttemptFailed,
    Event,
    EventsDropped,
    MessageAccepted,
    MessageQueued,
    MessageSent,
    OperatorActed,
)

CHANGES_LISTS = (MessageAccepted, AttemptFailed, MessageQueued, OperatorActed)
"""Events after which a list of scheduled or dead messages may be out of date."""


class EngineEvents(Message):
    """A batch of engine events, oldest first.

    Posted by ``MailConsoleApp`` to every open screen at most ``EVENT_FLUSH_HZ``
    times a second, only when something happened.
    """

    def __init__(self, events: tuple[Event, ...], dropped: int = 0) -> None:
        super().__init__()
        self.events = events
        self.dropped = dropped
        """Events lost before this batch (the bus or the buffer overflowed)."""

    def of_type(self, *kinds: type[Event]) -> list[Event]:
        return [event for event in self.events if isinstance(event, kinds)]

    @property
    def lists_changed(self) -> bool:
        """Whether a message changed state in a way a list would show."""
        return self.dropped > 0 or any(
            isinstance(event, CHANGES_LISTS) for event in self.events
        )

    def tail(self) -> Iterable[Event]:
        """Events worth a line in the live tail (deliveries, failures, actions)."""
        kinds = (MessageSent, AttemptFailed, OperatorActed, EventsDropped)
        return (event for event in self.events if isinstance(event, kinds))


class ActionDone(Message):
    """An operator action finished; posted by a screen to the app for a toast."""

    def __init__(self, summary: str) -> None:
        super().__init__()
        self.summary = summary
