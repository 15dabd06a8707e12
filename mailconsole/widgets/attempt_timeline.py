"""One message's life as a single timeline: accepted, scheduled, every attempt with
each recipient's reply, operator actions, and where it ended.

Built from a ``MessageDetail`` (a frozen record) and "now" from the clock; it shows
server replies and addresses, so every piece of data goes through the sanitiser.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rich.table import Table
from textual.widgets import Static

from mailconsole.engine.store.dto import AttemptRecord, AuditRecord, MessageDetail
from mailconsole.widgets.formatting import relative
from mailconsole.widgets.safe_text import safe_join

Part = tuple[str | None, str]


@dataclass(frozen=True)
class Entry:
    at: datetime
    kind: str
    parts: list[Part]
    details: list[list[Part]]


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _reply_parts(reply: dict[str, Any]) -> list[Part]:
    code = " ".join(str(reply[k]) for k in ("code", "enhanced") if reply.get(k))
    return [
        ("↳ ", "dim"),
        (str(reply.get("recipient", "?")), "bold"),
        (f"  {code}  " if code else "  ", ""),
        (str(reply.get("text") or ""), "italic"),
    ]


def _attempt(record: AttemptRecord) -> Entry:
    enhanced = (
        record.enhanced
        if not (record.reply or "").startswith(record.enhanced or "-")
        else None
    )
    code = " ".join(str(v) for v in (record.code, enhanced) if v)
    parts: list[Part] = [
        (f"#{record.number} {record.outcome}", "bold"),
        (f" at {record.stage}" if record.stage else "", ""),
        (f"  {code}" if code else "", ""),
        (f"  {record.reply}" if record.reply else "", "italic"),
        (f"  ({record.duration_ms} ms, {record.worker_id})", "dim"),
    ]
    replies = record.replies
    if len(replies) == 1 and replies[0].get("text") == record.reply:
        replies = ()  # the one recipient's reply is the attempt's: say it once
    details = [_reply_parts(reply) for reply in replies]
    return Entry(record.started_at, "attempt", parts, details)


def _audit(record: AuditRecord) -> Entry:
    parts: list[Part] = [(record.action, "bold"), (" by ", "dim"), (record.actor, "")]
    if record.count > 1:
        parts.append((f" (×{record.count}", "dim"))
        parts.append((f" {record.filter})" if record.filter else ")", "dim"))
    if record.reason:
        parts += [("  ", ""), (record.reason, "italic")]
    return Entry(record.at, "operator", parts, [])


def _end(detail: MessageDetail) -> Entry | None:
    s = detail.summary
    if s.status == "sent":
        return Entry(s.sent_at or s.updated_at, "sent", [("delivered", "bold")], [])
    if s.status == "dead":
        why = s.last_error or "no reason recorded"
        return Entry(s.updated_at, "dead", [(why, "bold")], [])
    if s.status in ("scheduled", "queued") and s.next_attempt_at is not None:
        return Entry(s.next_attempt_at, "next try", [("scheduled", "")], [])
    if s.status == "held":
        return Entry(s.updated_at, "held", [("waiting for release", "")], [])
    if s.status == "deleted":
        return Entry(s.updated_at, "deleted", [], [])
    return None


def entries(detail: MessageDetail) -> list[Entry]:
    """Every entry of the timeline, oldest first."""
    s = detail.summary
    accepted: list[Part] = [("from ", "dim"), (s.sender, ""), (" to ", "dim")]
    accepted.append((", ".join(s.recipients), ""))
    accepted.append((f"  ({detail.source_format})", "dim"))
    found = [Entry(s.created_at, "accepted", accepted, [])]
    found += [_attempt(a) for a in detail.attempts]
    found += [_audit(a) for a in detail.audit]
    if (end := _end(detail)) is not None:
        found.append(end)
    return sorted(found, key=lambda entry: _aware(entry.at))


def timeline_table(detail: MessageDetail, now: datetime) -> Table:
    """The timeline as a grid: time, what happened, details (which wrap in place)."""
    table = Table.grid(padding=(0, 1))
    table.add_column(no_wrap=True, style="dim")
    table.add_column(no_wrap=True, style="bold")
    table.add_column(ratio=1, overflow="fold")
    for entry in entries(detail):
        when = _aware(entry.at).astimezone(UTC).strftime("%m-%d %H:%M:%S")
        parts = list(entry.parts)
        if entry.kind == "next try":
            parts.append((f"  {relative(entry.at, now)}", "dim"))
        table.add_row(when, entry.kind, safe_join(parts, single_line=False))
        for detail_parts in entry.details:
            table.add_row("", "", safe_join(detail_parts, single_line=False))
    return table


class AttemptTimeline(Static):
    """A message's timeline; the screen calls :meth:`show` with the detail."""

    DEFAULT_CSS = """
    AttemptTimeline { height: auto; }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__("", markup=False, id=id, classes=classes)

    def show(self, detail: MessageDetail, now: datetime) -> None:
        self.update(timeline_table(detail, now))
