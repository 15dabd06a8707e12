"""The frozen records the operations API returns (re-exported by :mod:`.ops`).

Plain data with ``to_json`` for the CLI's ``--json``; no behaviour, no I/O. The
console and the CLI import them from ``mailconsole.engine.ops``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mailconsole.engine.store.dto import MessageSummary


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a list, newest first; pass ``next_cursor`` to get the next one."""

    items: tuple[MessageSummary, ...]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Stats:
    by_status: Mapping[str, int]
    queue_ready: int | None
    """Messages waiting in RabbitMQ; ``None`` when the broker is unreachable."""
    queue_unacked: int | None
    """Delivered but unacknowledged; ``None`` when it cannot be read (plain AMQP
    cannot tell; only the management API could, and it is not used)."""
    consumers: int | None
    sent_last_minute: int
    sent_last_hour: int
    failed_last_minute: int
    failed_last_hour: int
    oldest_waiting_age: float | None
    """Seconds since the oldest queued/scheduled message was accepted."""
    sent_per_minute: tuple[int, ...] = ()
    """Sent in each of the last 30 minutes, oldest first (for a sparkline)."""
    failed_per_minute: tuple[int, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "by_status": dict(self.by_status),
            "queue": {
                "ready": self.queue_ready,
                "unacked": self.queue_unacked,
                "consumers": self.consumers,
            },
            "sent": {
                "last_minute": self.sent_last_minute,
                "last_hour": self.sent_last_hour,
            },
            "failed": {
                "last_minute": self.failed_last_minute,
                "last_hour": self.failed_last_hour,
            },
            "oldest_waiting_age": self.oldest_waiting_age,
            "sent_per_minute": list(self.sent_per_minute),
            "failed_per_minute": list(self.failed_per_minute),
        }


@dataclass(frozen=True, slots=True)
class Plan:
    """What a bulk action would touch, shown before it runs."""

    action: str
    filter: str
    count: int
    domains: tuple[tuple[str, int], ...]
    causes: tuple[tuple[str, int], ...]
    skipped: tuple[tuple[str, str], ...] = ()
    """(message id, why) for matches the action would refuse (the first 20)."""
    skipped_count: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "filter": self.filter,
            "count": self.count,
            "domains": [list(d) for d in self.domains],
            "causes": [list(c) for c in self.causes],
            "skipped": [list(s) for s in self.skipped],
            "skipped_count": self.skipped_count,
        }


@dataclass(frozen=True, slots=True)
class ActionReport:
    action: str
    done: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...] = ()
    """(message id, reason) e.g. already accepted by the relay, wrong state."""
    failed: tuple[tuple[str, str], ...] = ()
    dry_run: bool = False
    """Nothing was changed: ``done`` is what would have been done."""

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "dry_run": self.dry_run,
            "done": list(self.done),
            "skipped": [{"id": i, "reason": r} for i, r in self.skipped],
            "failed": [{"id": i, "reason": r} for i, r in self.failed],
        }
