"""Engine events and the bounded bus that carries them to observers (console, logs).

Events are frozen dataclasses named in the past tense. The bus never blocks the
engine: a subscriber that falls behind loses its oldest events and is told how many
(``EventsDropped``), so a slow screen can never slow delivery.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Event:
    at: datetime


@dataclass(frozen=True, slots=True)
class MessageAccepted(Event):
    message_id: str
    status: str


@dataclass(frozen=True, slots=True)
class MessageSent(Event):
    message_id: str
    recipients: tuple[str, ...]
    duration_ms: int


@dataclass(frozen=True, slots=True)
class AttemptFailed(Event):
    """An attempt failed; ``status`` is where the message went (scheduled or dead)."""

    message_id: str
    status: str
    reason: str


@dataclass(frozen=True, slots=True)
class MessageQueued(Event):
    """A message was put back on the queue (due retry, replay, release, recovery)."""

    message_id: str
    cause: str


@dataclass(frozen=True, slots=True)
class DuplicateSkipped(Event):
    message_id: str


@dataclass(frozen=True, slots=True)
class EngineStateChanged(Event):
    """Broker or relay connectivity changed; ``detail`` says what, for a human."""

    component: str
    healthy: bool
    detail: str


@dataclass(frozen=True, slots=True)
class OperatorActed(Event):
    action: str
    message_ids: tuple[str, ...] = field(default_factory=tuple)
    count: int = 0


@dataclass(frozen=True, slots=True)
class EventsDropped(Event):
    count: int


class EventBus:
    """Fan-out of events to subscribers, each with its own bounded buffer."""

    def __init__(self, maxsize: int = 10_000) -> None:
        self._maxsize = maxsize
        self._subscribers: list[asyncio.Queue[Event]] = []

    def publish(self, event: Event) -> None:
        for queue in self._subscribers:
            if queue.full():
                queue.get_nowait()
                dropped = getattr(queue, "dropped", 0) + 1
                queue.dropped = dropped  # type: ignore[attr-defined]  # counter rides on the queue
            queue.put_nowait(event)

    async def subscribe(self) -> AsyncIterator[Event]:
        """Yield events as they come, until the consumer stops iterating."""
        queue: asyncio.Queue[Event] = asyncio.Queue(self._maxsize)
        self._subscribers.append(queue)
        try:
            while True:
                event = await queue.get()
                dropped = getattr(queue, "dropped", 0)
                if dropped:
                    queue.dropped = 0  # type: ignore[attr-defined]
                    yield EventsDropped(event.at, dropped)
                yield event
        finally:
            self._subscribers.remove(queue)
