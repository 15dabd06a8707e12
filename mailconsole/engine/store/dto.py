"""Frozen records that leave the store: the only shapes callers outside ``store/`` see."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    SCHEDULED = "scheduled"
    HELD = "held"
    SENT = "sent"
    DEAD = "dead"
    DELETED = "deleted"


WAITING = (Status.QUEUED, Status.SCHEDULED, Status.HELD)
"""States an operator may hold, delete or edit (a message not being sent right now)."""


@dataclass(frozen=True, slots=True)
class MessageSummary:
    id: str
    status: str
    sender: str
    recipients: tuple[str, ...]
    subject: str
    attempts: int
    last_error: str | None
    last_code: int | None
    next_attempt_at: datetime | None
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None = None
    possible_duplicate: bool = False
    edited_from: str | None = None
    priority: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "sender": self.sender,
            "recipients": list(self.recipients),
            "subject": self.subject,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "last_code": self.last_code,
            "next_attempt_at": _iso(self.next_attempt_at),
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "sent_at": _iso(self.sent_at),
            "possible_duplicate": self.possible_duplicate,
            "edited_from": self.edited_from,
        }


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    number: int
    started_at: datetime
    duration_ms: int
    worker_id: str
    outcome: str
    stage: str | None
    code: int | None
    enhanced: str | None
    reply: str | None
    replies: tuple[dict[str, Any], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "started_at": _iso(self.started_at),
            "duration_ms": self.duration_ms,
            "worker_id": self.worker_id,
            "outcome": self.outcome,
            "stage": self.stage,
            "code": self.code,
            "enhanced": self.enhanced,
            "reply": self.reply,
            "replies": list(self.replies),
        }


@dataclass(frozen=True, slots=True)
class AuditRecord:
    at: datetime
    actor: str
    action: str
    message_id: str | None
    filter: str | None
    count: int
    reason: str | None
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "at": _iso(self.at),
            "actor": self.actor,
            "action": self.action,
            "message_id": self.message_id,
            "filter": self.filter,
            "count": self.count,
            "reason": self.reason,
            "details": self.details,
        }


@dataclass(frozen=True, slots=True)
class MessageDetail:
    summary: MessageSummary
    idempotency_key: str | None
    source_format: str
    payload: dict[str, Any] | None
    raw_body: bytes | None
    rcpt_state: dict[str, str]
    last_reply: str | None
    last_enhanced: str | None
    duplicates: int
    attempts: tuple[AttemptRecord, ...]
    audit: tuple[AuditRecord, ...]
    edited_into: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        raw = None
        if self.raw_body is not None:
            raw = self.raw_body.decode("utf-8", errors="backslashreplace")
        return {
            **self.summary.to_json(),
            "idempotency_key": self.idempotency_key,
            "source_format": self.source_format,
            "payload": self.payload,
            "raw_body": raw,
            "rcpt_state": self.rcpt_state,
            "last_reply": self.last_reply,
            "last_enhanced": self.last_enhanced,
            "duplicates": self.duplicates,
            "attempt_history": [a.to_json() for a in self.attempts],
            "audit": [a.to_json() for a in self.audit],
            "edited_into": list(self.edited_into),
        }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
