"""Operator transitions: replay, retry-now, hold, release, delete, edit, suppressions.

Each batch is one transaction that locks its rows (``FOR UPDATE``; SQLite's
``BEGIN IMMEDIATE`` serialises writers instead), decides per row from the state it
finds *now*, changes only rows still in that state (``UPDATE ... WHERE id = :id AND
status = :seen``) and writes one audit row per message in the same commit. So an
action racing a worker either happens before the worker's claim (which then skips
the row) or sees the worker's state and refuses: never a double send, never a lost
message. A ``sending`` row is never touched: the worker that owns it decides.

This module never publishes to the broker (the caller publishes refs after the
commit) and never decides policy beyond the operator rules written here. No ORM
object leaves it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import groupby
from typing import Any, TypeVar

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from mailconsole.engine.errors import NotFound, WrongState
from mailconsole.engine.store import cause_index
from mailconsole.engine.store.db import Database
from mailconsole.engine.store.delivery import NewMessage
from mailconsole.engine.store.dto import Status
from mailconsole.engine.store.models import (
    AuditRow,
    MessageRow,
    RecipientRow,
    SuppressionRow,
)
from mailconsole.engine.store.queries import STATE_COLUMNS, suppressed_among
from mailconsole.engine.store.rules import (
    EDITABLE,
    Change,
    Decide,
    RowState,
    pending_recipients,
    why_not,
    without_suppressed,
)

DEADLOCK_RETRIES = 3
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class AuditInfo:
    """Who does what and why; written with every message the action touches."""

    actor: str
    action: str
    action_id: str
    """Shared by every audit row of one command (and its summary row)."""
    reason: str | None = None
    filter: str | None = None
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Batch:
    done: list[Change] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


class AdminStore:
    """Operator transitions over one store."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def apply(
        self,
        ids: Sequence[str],
        decide: Decide,
        audit: AuditInfo,
        now: datetime,
        *,
        skip_locked: bool = False,
        dry_run: bool = False,
    ) -> Batch:
        """Decide and apply one batch in one transaction (rolled back on ``dry_run``).

        ``skip_locked`` (bulk actions): rows a worker holds right now are reported
        busy instead of waited for.
        """

        async def run(session: AsyncSession) -> Batch:
            return await self._apply(session, ids, decide, audit, now, skip_locked)

        return await self._transaction(run, dry_run=dry_run)

    async def _apply(
        self,
        session: AsyncSession,
        ids: Sequence[str],
        decide: Decide,
        audit: AuditInfo,
        now: datetime,
        skip_locked: bool,
    ) -> Batch:
        stmt = (
            select(*STATE_COLUMNS)
            .where(MessageRow.id.in_(list(ids)))
            .order_by(MessageRow.id)
        )
        if self.db.supports_skip_locked:
            stmt = stmt.with_for_update(skip_locked=skip_locked)
        found = {r.id: r for r in (await session.execute(stmt)).all()}
        batch = Batch()
        for message_id in dict.fromkeys(ids):
            row = found.get(message_id)
            if row is None:
                gone = "busy (a worker holds it); try again" if skip_locked else None
                batch.skipped.append((message_id, gone or "not found"))
                continue
            decision = decide(row, now)
            if isinstance(decision, str):
                batch.skipped.append((message_id, decision))
            else:
                batch.done.append(decision)
        await _drop_suppressed(session, batch, found)
        await _update(session, batch.done)
        # Queued again (replay, release): its failure is history, not a live cause.
        requeued = [c.id for c in batch.done if c.publish]
        await cause_index.write(session, (), replacing=requeued)
        await _audit_rows(session, batch.done, audit, now)
        return batch

    async def summary(
        self, audit: AuditInfo, now: datetime, count: int, details: dict[str, Any]
    ) -> None:
        """The one audit row of a bulk action, after its batches."""
        row = _audit_row(audit, now, None, count, details)
        async with self.db.write() as session, session.begin():
            await session.execute(insert(AuditRow), [row])

    async def create_edited(
        self,
        original_id: str,
        new: NewMessage,
        now: datetime,
        audit: AuditInfo,
        *,
        dry_run: bool = False,
    ) -> str:
        """Store a corrected copy of a dead or held message, linked by ``edited_from``.

        The original stays as it was, except that a held original is deleted
        (replaced by the copy) so it cannot be released and sent as well.

        Raises:
            NotFound: no such message.
            WrongState: the original is not dead or held, or a new recipient is on
                the suppression list.
        """

        async def run(session: AsyncSession) -> str:
            await self._create_edited(session, original_id, new, now, audit)
            return new.id

        return await self._transaction(run, dry_run=dry_run)

    async def _create_edited(
        self,
        session: AsyncSession,
        original_id: str,
        new: NewMessage,
        now: datetime,
        audit: AuditInfo,
    ) -> None:
        stmt = select(*STATE_COLUMNS).where(MessageRow.id == original_id)
        if self.db.supports_skip_locked:
            stmt = stmt.with_for_update()
        original = (await session.execute(stmt)).one_or_none()
        if original is None:
            raise NotFound(f"no message {original_id}")
        if original.status not in EDITABLE:
            raise WrongState(
                f"{original_id}: {why_not(original, 'edit')}; only dead or held "
                "messages can be edited"
            )
        await _refuse_suppressed(session, new.recipients)
        await session.execute(insert(MessageRow), [_new_row(new, original_id, now)])
        await session.execute(insert(RecipientRow), _recipient_rows(new))
        if original.status == Status.HELD:
            # Replaced: releasing the original later must not send it as well.
            values = {"status": Status.DELETED, "held_from": None, "updated_at": now}
            await _update(session, [Change(original_id, Status.HELD, values)])
        note = {"replaced_by": new.id, "original_status": original.status}
        audited = [
            Change(new.id, "", {}, note={"edited_from": original_id}),
            Change(original_id, original.status, {}, note=note),
        ]
        await _audit_rows(session, audited, audit, now)

    # -- suppression list ---------------------------------------------------------
    async def suppress(
        self, address: str, reason: str, now: datetime, audit: AuditInfo
    ) -> bool:
        """Add an address; ``False`` when it was on the list already (nothing done)."""
        async with self.db.write() as session, session.begin():
            if await session.get(SuppressionRow, address) is not None:
                return False
            row = {"address": address, "reason": reason, "source": "operator"}
            await session.execute(insert(SuppressionRow), [row | {"created_at": now}])
            await session.execute(
                insert(AuditRow),
                [_audit_row(audit, now, None, 1, {"address": address})],
            )
            return True

    async def unsuppress(self, address: str, now: datetime, audit: AuditInfo) -> None:
        """Raises NotFound when the address is not on the list."""
        async with self.db.write() as session, session.begin():
            row = await session.get(SuppressionRow, address)
            if row is None:
                raise NotFound(f"{address} is not on the suppression list")
            await session.delete(row)
            details = {"address": address, "was": row.reason}
            await session.execute(
                insert(AuditRow), [_audit_row(audit, now, None, 1, details)]
            )

    async def suppressions(
        self, search: str = "", limit: int = 1000
    ) -> list[tuple[str, str, str, datetime]]:
        """(address, reason, source, since), newest first."""
        stmt = select(SuppressionRow)
        if search:
            stmt = stmt.where(SuppressionRow.address.icontains(search, autoescape=True))
        stmt = stmt.order_by(SuppressionRow.created_at.desc()).limit(limit)
        async with self.db.read() as session:
            rows = (await session.execute(stmt)).scalars()
            return [(r.address, r.reason, r.source, r.created_at) for r in rows]

    async def record(self, audit: AuditInfo, now: datetime, count: int) -> None:
        """An audit row for an action that changes no row (export, import)."""
        await self.summary(audit, now, count, {})

    async def _transaction(
        self, work: Callable[[AsyncSession], Awaitable[_T]], *, dry_run: bool = False
    ) -> _T:
        for attempt in range(DEADLOCK_RETRIES):
            try:
                async with self.db.write() as session:
                    trans = await session.begin()
                    try:
                        result = await work(session)
                    except BaseException:
                        await trans.rollback()
                        raise
                    await (trans.rollback() if dry_run else trans.commit())
                    return result
            except DBAPIError as exc:
                # Two lockers in different orders (a worker's batch claim and ours):
                # the database picks a victim; trying again is the documented cure.
                if (
                    "deadlock" not in str(exc).lower()
                    or attempt == DEADLOCK_RETRIES - 1
                ):
                    raise
        raise AssertionError("unreachable")


async def _drop_suppressed(
    session: AsyncSession, batch: Batch, rows: Mapping[str, RowState]
) -> None:
    """Apply the suppression list to the changes that queue a message (replay,
    release): read in the batch's transaction, so an address suppressed a moment
    ago is honoured."""
    queuing = [c for c in batch.done if c.publish]
    addresses = {r.lower() for c in queuing for r in pending_recipients(c, rows[c.id])}
    listed = await suppressed_among(session, addresses)
    if not listed:
        return
    done: list[Change] = []
    for change in batch.done:
        decision = without_suppressed(change, rows[change.id], listed)
        if isinstance(decision, str):
            batch.skipped.append((change.id, decision))
        else:
            done.append(decision)
    batch.done = done


async def _update(session: AsyncSession, changes: list[Change]) -> None:
    """Conditional updates, one executemany per shape of change."""
    table = MessageRow.__table__
    shaped = sorted(changes, key=lambda c: sorted(c.values))
    for keys, group in groupby(shaped, key=lambda c: tuple(sorted(c.values))):
        if not keys:
            continue
        stmt = (
            update(MessageRow)
            .where(MessageRow.id == bindparam("w_id"))
            .where(MessageRow.status == bindparam("w_status"))
            .values({k: bindparam(f"v_{k}", type_=table.c[k].type) for k in keys})
        )
        params = [
            {"w_id": c.id, "w_status": str(c.from_status)}
            | {f"v_{k}": v for k, v in c.values.items()}
            for c in group
        ]
        conn = await session.connection()
        result = await conn.execute(stmt, params)
        # The rows are locked, so every update must hit. If one did not, something
        # bypassed the lock: undo the whole batch rather than audit a change that did
        # not happen (asyncpg reports no per-batch count; PostgreSQL's row locks hold).
        if conn.dialect.supports_sane_multi_rowcount and result.rowcount != len(params):
            raise WrongState(
                "a message changed state while this action ran; nothing was done, "
                "try again"
            )


async def _audit_rows(
    session: AsyncSession, changes: list[Change], audit: AuditInfo, now: datetime
) -> None:
    if not changes:
        return
    rows = [
        _audit_row(audit, now, c.id, 1, {"from": str(c.from_status), **c.note})
        for c in changes
    ]
    await session.execute(insert(AuditRow), rows)


def _audit_row(
    audit: AuditInfo,
    now: datetime,
    message_id: str | None,
    count: int,
    details: dict[str, Any],
) -> dict[str, Any]:
    return {
        "at": now,
        "actor": audit.actor[:128],
        "action": audit.action[:32],
        "message_id": message_id,
        "filter": audit.filter,
        "count": count,
        "reason": audit.reason,
        "details": {"action_id": audit.action_id, **audit.args, **details},
    }


async def _refuse_suppressed(session: AsyncSession, recipients: Sequence[str]) -> None:
    lowered = sorted({r.lower() for r in recipients})
    hit = (
        await session.execute(
            select(SuppressionRow.address).where(SuppressionRow.address.in_(lowered))
        )
    ).scalars()
    listed = sorted(hit)
    if listed:
        raise WrongState(
            f"on the suppression list: {', '.join(listed)} "
            "(`mailconsole suppress remove ADDRESS` first, or drop the recipient)"
        )


def _new_row(new: NewMessage, original_id: str, now: datetime) -> dict[str, Any]:
    return {
        "id": new.id,
        "idempotency_key": new.idempotency_key,
        "status": new.status,
        "source_format": new.source_format,
        "payload": new.payload,
        "raw_body": None,
        "body_sha256": new.body_sha256,
        "sender": new.sender[:320],
        "recipients": ", ".join(new.recipients),
        "rcpt_state": new.rcpt_state,
        "subject": new.subject[:1000],
        "priority": new.priority,
        "attempts": 0,
        "next_attempt_at": new.next_attempt_at,
        "possible_duplicate": False,
        "duplicates": 0,
        "edited_from": original_id,
        "created_at": now,
        "updated_at": now,
        "queued_at": now if new.status == Status.QUEUED else None,
    }


def _recipient_rows(new: NewMessage) -> list[dict[str, Any]]:
    return [
        {
            "message_id": new.id,
            "address": r.lower(),
            "domain": r.rpartition("@")[2].lower(),
        }
        for r in new.recipients
    ]
