"""Operator reads: filtered pages, counts, one message in full, stats, failure groups.

Filters (:mod:`mailconsole.engine.filters`) become where-clauses here, so the console
and the CLI query exactly alike. Lists page by keyset on ``(created_at, id)`` and
recipient conditions go through the indexed ``message_recipients`` table, so reads
stay fast with a million stored messages; only free-text search scans. Read-only:
this module never writes (operator transitions are in :mod:`.admin`), and no ORM
object leaves it.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    func,
    or_,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession

from mailconsole.engine.errors import MailconsoleError
from mailconsole.engine.filters import Filter, TimeBound
from mailconsole.engine.store.cause_index import FAILED
from mailconsole.engine.store.causes import FailureGroup
from mailconsole.engine.store.db import Database
from mailconsole.engine.store.dto import (
    AttemptRecord,
    AuditRecord,
    MessageDetail,
    MessageSummary,
)
from mailconsole.engine.store.models import (
    AttemptRow,
    AuditRow,
    CauseRow,
    MessageRow,
    RecipientRow,
    SuppressionRow,
)

_SUMMARY = (  # the list columns: never the payload
    MessageRow.id,
    MessageRow.status,
    MessageRow.sender,
    MessageRow.recipients,
    MessageRow.subject,
    MessageRow.attempts,
    MessageRow.last_error,
    MessageRow.last_code,
    MessageRow.next_attempt_at,
    MessageRow.created_at,
    MessageRow.updated_at,
    MessageRow.sent_at,
    MessageRow.possible_duplicate,
    MessageRow.edited_from,
    MessageRow.priority,
)
STATE_COLUMNS = (  # what the operator rules (store/rules.py) decide on
    MessageRow.id,
    MessageRow.status,
    MessageRow.rcpt_state,
    MessageRow.possible_duplicate,
    MessageRow.held_from,
    MessageRow.next_attempt_at,
    MessageRow.payload.is_not(None).label("has_payload"),
)


def encode_cursor(created_at: datetime, message_id: str) -> str:
    raw = f"{created_at.isoformat()}|{message_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, _, message_id = raw.partition("|")
        return datetime.fromisoformat(at), message_id
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise MailconsoleError(f"bad page cursor {cursor[:40]!r}") from None


def _at(bound: TimeBound, now: datetime) -> datetime:
    return now - bound if isinstance(bound, timedelta) else bound


def _text_clause(text: str) -> ColumnElement[bool]:
    columns = (
        MessageRow.recipients,
        MessageRow.subject,
        MessageRow.id,
        MessageRow.last_error,
    )
    return or_(*(c.icontains(text, autoescape=True) for c in columns))


def _sender_clause(senders: Iterable[str]) -> ColumnElement[bool]:
    lowered = func.lower(MessageRow.sender)
    return or_(
        *(
            lowered.endswith(s, autoescape=True) if s.startswith("@") else lowered == s
            for s in senders
        )
    )


def _recipient_clauses(f: Filter) -> list[ColumnElement[bool]]:
    # IN (subquery) rather than EXISTS lets the planner start from the recipient index.
    out: list[ColumnElement[bool]] = []
    if f.to:
        sub = select(RecipientRow.message_id).where(RecipientRow.address.in_(f.to))
        out.append(MessageRow.id.in_(sub))
    if f.domains:
        sub = select(RecipientRow.message_id).where(RecipientRow.domain.in_(f.domains))
        out.append(MessageRow.id.in_(sub))
    return out


def _reply_clauses(f: Filter) -> list[ColumnElement[bool]]:
    out: list[ColumnElement[bool]] = []
    if f.codes:
        out.append(or_(*(MessageRow.last_code.between(a, b) for a, b in f.codes)))
    if f.enhanced:
        out.append(
            or_(
                *(
                    MessageRow.last_enhanced == e
                    if e.count(".") == 2
                    else MessageRow.last_enhanced.startswith(e + ".", autoescape=True)
                    for e in f.enhanced
                )
            )
        )
    return out


def _group_clause(f: Filter) -> ColumnElement[bool]:
    # A key's prefix will do (as with git hashes): the filter accepts 4+.
    keys = or_(*(CauseRow.key.startswith(k, autoescape=True) for k in f.groups))
    clause: ColumnElement[bool] = MessageRow.id.in_(
        select(CauseRow.message_id).where(keys)
    )
    if not f.statuses:  # a group is of failures, as ``failures`` lists them
        clause = and_(clause, MessageRow.status.in_(FAILED))
    return clause


def filter_clauses(f: Filter, now: datetime) -> list[ColumnElement[bool]]:
    """Where-clauses for all of ``f``."""
    out: list[ColumnElement[bool]] = []
    if f.statuses:
        out.append(MessageRow.status.in_(f.statuses))
    if f.ids:
        out.append(MessageRow.id.in_(f.ids))
    out += _recipient_clauses(f)
    if f.senders:
        out.append(_sender_clause(f.senders))
    out += _reply_clauses(f)
    if f.since is not None:
        out.append(MessageRow.created_at >= _at(f.since, now))
    if f.until is not None:
        out.append(MessageRow.created_at <= _at(f.until, now))
    if f.duplicate is not None:
        out.append(MessageRow.possible_duplicate.is_(f.duplicate))
    out += [_text_clause(t) for t in f.text]
    if f.groups:
        out.append(_group_clause(f))
    return out


async def suppressed_among(session: AsyncSession, addresses: set[str]) -> set[str]:
    """Which of these (lower-cased) addresses are on the suppression list."""
    if not addresses:
        return set()
    stmt = select(SuppressionRow.address).where(
        SuppressionRow.address.in_(sorted(addresses))
    )
    return set((await session.execute(stmt)).scalars())


def summary(row: Any) -> MessageSummary:
    """A list entry from a row with the ``_SUMMARY`` columns (or a whole MessageRow)."""
    return MessageSummary(
        id=row.id,
        status=row.status,
        sender=row.sender,
        recipients=tuple(r for r in row.recipients.split(", ") if r),
        subject=row.subject,
        attempts=row.attempts,
        last_error=row.last_error,
        last_code=row.last_code,
        next_attempt_at=row.next_attempt_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
        sent_at=row.sent_at,
        possible_duplicate=bool(row.possible_duplicate),
        edited_from=row.edited_from,
        priority=row.priority,
    )


class Queries:
    """Read-only queries over one store."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def where(self, f: Filter, now: datetime) -> list[ColumnElement[bool]]:
        """All of ``f`` as where-clauses."""
        return filter_clauses(f, now)

    async def page(
        self, clauses: list[ColumnElement[bool]], limit: int, cursor: str | None
    ) -> tuple[list[MessageSummary], str | None]:
        stmt = select(*_SUMMARY).where(*clauses)
        if cursor:
            at, last_id = decode_cursor(cursor)
            # The plain bound gives every planner a range on the index.
            stmt = stmt.where(MessageRow.created_at <= at).where(
                or_(
                    MessageRow.created_at < at,
                    and_(MessageRow.created_at == at, MessageRow.id < last_id),
                )
            )
        stmt = stmt.order_by(MessageRow.created_at.desc(), MessageRow.id.desc())
        async with self.db.read() as session:
            rows = (await session.execute(stmt.limit(limit + 1))).all()
        items = [summary(r) for r in rows[:limit]]
        more = len(rows) > limit and items
        last = items[-1] if more else None
        return items, encode_cursor(last.created_at, last.id) if last else None

    async def count(self, clauses: list[ColumnElement[bool]]) -> int:
        stmt = select(func.count()).select_from(MessageRow).where(*clauses)
        async with self.db.read() as session:
            return int((await session.execute(stmt)).scalar_one())

    async def ids(
        self, clauses: list[ColumnElement[bool]], after: str, limit: int
    ) -> list[str]:
        """Matching ids in id order after ``after`` (bulk actions walk with this)."""
        stmt = (
            select(MessageRow.id)
            .where(*clauses, MessageRow.id > after)
            .order_by(MessageRow.id)
            .limit(limit)
        )
        async with self.db.read() as session:
            return list((await session.execute(stmt)).scalars())

    async def states(
        self, clauses: list[ColumnElement[bool]], after: str, limit: int
    ) -> list[Any]:
        """Rows of ``STATE_COLUMNS`` after id ``after``, in id order (for plans)."""
        stmt = (
            select(*STATE_COLUMNS)
            .where(*clauses, MessageRow.id > after)
            .order_by(MessageRow.id)
            .limit(limit)
        )
        async with self.db.read() as session:
            return list((await session.execute(stmt)).all())

    async def suppressed(self, addresses: set[str]) -> set[str]:
        """Which of these (lower-cased) addresses are on the suppression list."""
        async with self.db.read() as session:
            return await suppressed_among(session, addresses)

    async def export_page(
        self, clauses: list[ColumnElement[bool]], after: str, limit: int
    ) -> tuple[list[dict[str, Any]], str]:
        """``{"job", "meta"}`` records of matches after id ``after``, in id order;
        returns them and the id to continue after (``""`` when done)."""
        ids = await self.ids(clauses, after, limit)
        if not ids:
            return [], ""
        stmt = select(MessageRow).where(MessageRow.id.in_(ids)).order_by(MessageRow.id)
        async with self.db.read() as session:
            rows = (await session.execute(stmt)).scalars().all()
            return [_exported(r) for r in rows], ids[-1]

    async def detail(self, message_id: str) -> MessageDetail | None:
        async with self.db.read() as session:
            row = await session.get(MessageRow, message_id)
            if row is None:
                return None
            attempts = (
                await session.execute(
                    select(AttemptRow)
                    .where(AttemptRow.message_id == message_id)
                    .order_by(AttemptRow.number, AttemptRow.id)
                )
            ).scalars()
            audit = (
                await session.execute(
                    select(AuditRow)
                    .where(AuditRow.message_id == message_id)
                    .order_by(AuditRow.at, AuditRow.id)
                )
            ).scalars()
            edited_into = (
                await session.execute(
                    select(MessageRow.id)
                    .where(MessageRow.edited_from == message_id)
                    .order_by(MessageRow.created_at, MessageRow.id)
                )
            ).scalars()
            return MessageDetail(
                summary=summary(row),
                idempotency_key=row.idempotency_key,
                source_format=row.source_format,
                payload=json.loads(row.payload) if row.payload else None,
                raw_body=row.raw_body,
                rcpt_state=dict(row.rcpt_state or {}),
                last_reply=row.last_reply,
                last_enhanced=row.last_enhanced,
                duplicates=row.duplicates,
                attempts=tuple(_attempt(a) for a in attempts),
                audit=tuple(_audit(a) for a in audit),
                edited_into=tuple(edited_into),
            )

    async def failures(
        self, f: Filter, now: datetime, limit: int
    ) -> list[FailureGroup]:
        """Failure groups, largest first; a message failing for two domains counts
        in both (each domain is its own broken thing). The example is the newest
        message of the group."""
        clauses = await self.where(f, now)
        if not f.statuses:
            clauses.append(MessageRow.status.in_(FAILED))
        count = func.count()
        last = func.max(MessageRow.updated_at)
        stmt = (
            select(
                CauseRow.key,
                CauseRow.code,
                CauseRow.enhanced,
                CauseRow.reply,
                CauseRow.domain,
                count,
                func.min(MessageRow.updated_at),
                last,
                func.max(MessageRow.id),
            )
            .join(MessageRow, MessageRow.id == CauseRow.message_id)
            .where(*clauses)
            .group_by(
                CauseRow.key,
                CauseRow.code,
                CauseRow.enhanced,
                CauseRow.reply,
                CauseRow.domain,
            )
            .order_by(count.desc(), last.desc(), CauseRow.key)
            .limit(limit)
        )
        async with self.db.read() as session:
            rows = (await session.execute(stmt)).all()
        return [
            FailureGroup(key, code, enhanced, reply, domain, n, first, latest, example)
            for key, code, enhanced, reply, domain, n, first, latest, example in rows
        ]

    async def domains(
        self, clauses: list[ColumnElement[bool]], limit: int = 10
    ) -> list[tuple[str, int]]:
        """Recipient domains of the matching messages, most common first."""
        matching = select(MessageRow.id).where(*clauses)
        stmt = (
            select(RecipientRow.domain, func.count(RecipientRow.message_id.distinct()))
            .where(RecipientRow.message_id.in_(matching))
            .group_by(RecipientRow.domain)
            .order_by(func.count(RecipientRow.message_id.distinct()).desc())
            .limit(limit)
        )
        async with self.db.read() as session:
            return [(d, int(n)) for d, n in (await session.execute(stmt)).all()]


def _exported(row: MessageRow) -> dict[str, Any]:
    raw = None
    if row.raw_body is not None:
        raw = row.raw_body.decode("utf-8", errors="backslashreplace")
    meta = {
        "id": row.id,
        "status": row.status,
        "attempts": row.attempts,
        "last_error": row.last_error,
        "last_code": row.last_code,
        "last_enhanced": row.last_enhanced,
        "rcpt_state": dict(row.rcpt_state or {}),
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
        "edited_from": row.edited_from,
        "raw_body": raw,
    }
    return {"job": json.loads(row.payload) if row.payload else None, "meta": meta}


def _attempt(a: AttemptRow) -> AttemptRecord:
    return AttemptRecord(
        number=a.number,
        started_at=a.started_at,
        duration_ms=a.duration_ms,
        worker_id=a.worker_id,
        outcome=a.outcome,
        stage=a.stage,
        code=a.code,
        enhanced=a.enhanced,
        reply=a.reply,
        replies=tuple(a.replies or ()),
    )


def _audit(a: AuditRow) -> AuditRecord:
    return AuditRecord(
        at=a.at,
        actor=a.actor,
        action=a.action,
        message_id=a.message_id,
        filter=a.filter,
        count=a.count,
        reason=a.reason,
        details=dict(a.details or {}),
    )
