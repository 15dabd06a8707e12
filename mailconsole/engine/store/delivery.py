"""The delivery path's state transitions, each batch one committed transaction.

Named for what they do to messages: ``ingest`` (accepted deliveries become rows this
worker owns), ``record_results`` (attempt outcomes), ``claim_due`` (scheduled rows
become queued), ``recover_orphans`` and ``release`` (rows a worker can no longer send).
They take and return plain records; no ORM object leaves this module. Operator
actions live in :mod:`mailconsole.engine.store.admin`, not here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from mailconsole.engine.store import cause_index
from mailconsole.engine.store.db import Database
from mailconsole.engine.store.dto import Status
from mailconsole.engine.store.models import (
    AttemptRow,
    MessageRow,
    RecipientRow,
    SuppressionRow,
    WorkerRow,
)

HASH_DEDUPE_WINDOW = timedelta(hours=1)
"""How far back a redelivered message without an id is matched by its body hash."""


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A delivery that is not yet in the store, ready to insert."""

    id: str
    status: Status
    source_format: str
    payload: str | None
    raw_body: bytes | None
    idempotency_key: str | None = None
    body_sha256: str | None = None
    match_by_hash: bool = False
    """Redelivered without an id: a row with the same body hash is this message."""
    sender: str = ""
    recipients: tuple[str, ...] = ()
    rcpt_state: dict[str, str] = field(default_factory=dict)
    subject: str = ""
    priority: int = 0
    next_attempt_at: datetime | None = None
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class Ref:
    """A delivery naming a message already in the store (re-published by a scheduler)."""

    id: str


@dataclass(frozen=True, slots=True)
class Claimed:
    """A message this worker now owns and must send (or release)."""

    id: str
    payload: str
    rcpt_state: dict[str, str]
    attempts: int
    created_at: datetime
    possible_duplicate: bool


@dataclass(frozen=True, slots=True)
class IngestOutcome:
    """What became of one delivery: ``send`` (see ``claimed``), ``stored`` (scheduled or
    dead on arrival), ``duplicate`` (already accepted; not sent again) or ``skip``."""

    action: str
    message_id: str | None
    claimed: Claimed | None = None
    status: str | None = None


@dataclass(frozen=True, slots=True)
class Result:
    """The outcome of one attempt, as the columns to write."""

    id: str
    status: Status
    attempts: int
    rcpt_state: dict[str, str]
    next_attempt_at: datetime | None
    last_error: str | None
    last_code: int | None
    last_enhanced: str | None
    last_reply: str | None
    possible_duplicate: bool
    sent: bool
    attempt: dict[str, Any] | None
    """Columns of the attempt row; ``None`` when no SMTP transaction was tried."""


class DeliveryStore:
    """Transitions of the delivery path for one worker."""

    def __init__(self, db: Database, worker_id: str) -> None:
        self.db = db
        self.worker_id = worker_id

    # -- ingest ---------------------------------------------------------------------
    async def ingest(
        self, items: Sequence[NewMessage | Ref], now: datetime
    ) -> list[IngestOutcome]:
        """Store a batch of deliveries in one transaction; the caller acks after it.

        A unique-key race with another worker rolls back and is retried once, when the
        other worker's row is visible and the delivery becomes a duplicate.
        """
        for attempt in range(2):
            try:
                async with self.db.write() as session, session.begin():
                    return await self._ingest(session, items, now)
            except IntegrityError:
                if attempt:
                    raise
        raise AssertionError("unreachable")

    async def _ingest(
        self, session: AsyncSession, items: Sequence[NewMessage | Ref], now: datetime
    ) -> list[IngestOutcome]:
        refs = [i.id for i in items if isinstance(i, Ref)]
        new = [i for i in items if isinstance(i, NewMessage)]
        claimed = await self._claim_refs(session, refs, now) if refs else {}
        known = await self._known(session, new, now) if new else {}
        fresh: dict[str, NewMessage] = {}
        duplicate_of: dict[int, str] = {}
        seen: dict[str, str] = {}
        for n, item in enumerate(items):
            if not isinstance(item, NewMessage):
                continue
            key = _dedupe_key(item)
            existing = (known.get(key) or seen.get(key)) if key else None
            if existing is not None:
                duplicate_of[n] = existing
                continue
            if key:
                seen[key] = item.id
            fresh[item.id] = item
        if fresh:
            stored = await self._apply_suppressions(session, list(fresh.values()))
            fresh = {m.id: m for m in stored}
            await self._insert(session, stored, now)
        if duplicate_of:
            await self._count_duplicates(session, list(duplicate_of.values()))
        outcomes: list[IngestOutcome] = []
        for n, item in enumerate(items):
            if isinstance(item, Ref):
                # Two copies of one ref in a batch: only the first may send.
                first = claimed.pop(item.id, None)
                outcomes.append(first or IngestOutcome("skip", item.id))
            elif n in duplicate_of:
                outcomes.append(IngestOutcome("duplicate", duplicate_of[n]))
            else:
                outcomes.append(self._outcome_for_new(fresh[item.id], now))
        return outcomes

    async def _apply_suppressions(
        self, session: AsyncSession, items: list[NewMessage]
    ) -> list[NewMessage]:
        """Suppressed recipients are refused without an SMTP attempt; a message left
        with nobody to send to is dead on arrival."""
        addresses = {r.lower() for m in items for r in m.recipients}
        if not addresses:
            return items
        rows = await session.execute(
            select(SuppressionRow.address, SuppressionRow.reason).where(
                SuppressionRow.address.in_(addresses)
            )
        )
        suppressed = {a: r for a, r in rows}
        if not suppressed:
            return items
        return [_suppress_recipients(m, suppressed) for m in items]

    def _outcome_for_new(self, item: NewMessage, now: datetime) -> IngestOutcome:
        if item.status is not Status.SENDING:
            return IngestOutcome("stored", item.id, status=item.status)
        assert item.payload is not None
        claim = Claimed(item.id, item.payload, dict(item.rcpt_state), 0, now, False)
        return IngestOutcome("send", item.id, claimed=claim)

    async def _claim_refs(
        self, session: AsyncSession, refs: list[str], now: datetime
    ) -> dict[str, IngestOutcome]:
        rows = (
            await session.execute(
                select(MessageRow).where(MessageRow.id.in_(refs)).with_for_update()
            )
        ).scalars()
        out: dict[str, IngestOutcome] = {}
        take: list[str] = []
        for row in rows:
            if row.status == Status.QUEUED and row.payload is not None:
                take.append(row.id)
                out[row.id] = IngestOutcome(
                    "send",
                    row.id,
                    claimed=Claimed(
                        row.id,
                        row.payload,
                        dict(row.rcpt_state),
                        row.attempts,
                        row.created_at,
                        row.possible_duplicate,
                    ),
                )
            elif row.status == Status.SENT:
                out[row.id] = IngestOutcome("duplicate", row.id)
            else:
                out[row.id] = IngestOutcome("skip", row.id, status=row.status)
        if take:
            await session.execute(
                update(MessageRow)
                .where(MessageRow.id.in_(take))
                .values(status=Status.SENDING, worker_id=self.worker_id, updated_at=now)
            )
        return out

    async def _known(
        self, session: AsyncSession, new: list[NewMessage], now: datetime
    ) -> dict[str, str]:
        """Dedupe keys of incoming messages that are already stored -> their ids."""
        known: dict[str, str] = {}
        keys = [m.idempotency_key for m in new if m.idempotency_key]
        if keys:
            result = await session.execute(
                select(MessageRow.idempotency_key, MessageRow.id).where(
                    MessageRow.idempotency_key.in_(keys)
                )
            )
            known.update({f"k:{k}": i for k, i in result if k})
        hashes = [m.body_sha256 for m in new if m.match_by_hash and m.body_sha256]
        if hashes:
            result = await session.execute(
                select(MessageRow.body_sha256, MessageRow.id).where(
                    MessageRow.body_sha256.in_(hashes),
                    MessageRow.created_at >= now - HASH_DEDUPE_WINDOW,
                )
            )
            known.update({f"h:{h}": i for h, i in result if h})
        return known

    async def _insert(
        self, session: AsyncSession, items: list[NewMessage], now: datetime
    ) -> None:
        await session.execute(insert(MessageRow), [self._row(m, now) for m in items])
        # Dead on arrival (malformed, suppressed) is a failure with a cause too.
        await cause_index.write(
            session,
            (
                row
                for m in items
                for row in cause_index.cause_rows(
                    m.id, m.status, None, None, None, m.last_error, m.rcpt_state
                )
            ),
        )
        recipients = [
            {
                "message_id": m.id,
                "address": r.lower(),
                "domain": r.rpartition("@")[2].lower(),
            }
            for m in items
            for r in m.recipients
        ]
        if recipients:
            await session.execute(insert(RecipientRow), recipients)

    def _row(self, m: NewMessage, now: datetime) -> dict[str, Any]:
        return {
            "id": m.id,
            "idempotency_key": m.idempotency_key,
            "status": m.status,
            "source_format": m.source_format,
            "payload": m.payload,
            "raw_body": m.raw_body,
            "body_sha256": m.body_sha256,
            "sender": m.sender[:320],
            "recipients": ", ".join(m.recipients),
            "rcpt_state": m.rcpt_state,
            "subject": m.subject[:1000],
            "priority": m.priority,
            "attempts": 0,
            "next_attempt_at": m.next_attempt_at,
            "last_error": m.last_error,
            "worker_id": self.worker_id if m.status is Status.SENDING else None,
            "possible_duplicate": False,
            "duplicates": 0,
            "created_at": now,
            "updated_at": now,
        }

    async def _count_duplicates(self, session: AsyncSession, ids: list[str]) -> None:
        for message_id in ids:
            await session.execute(
                update(MessageRow)
                .where(MessageRow.id == message_id)
                .values(duplicates=MessageRow.duplicates + 1)
            )

    # -- results ----------------------------------------------------------------------
    async def record_results(
        self,
        results: Sequence[Result],
        now: datetime,
        *,
        suppress: Sequence[tuple[str, str]] = (),
    ) -> list[str]:
        """Write a batch of attempt outcomes in one transaction.

        A row is only changed while this worker still owns it, so a send recovered by
        another worker (after this one was presumed dead) is not overwritten. Returns
        the ids whose result was dropped for that reason.
        """
        async with self.db.write() as session, session.begin():
            owned = set(
                await self._lock_ids(
                    session,
                    select(MessageRow.id)
                    .where(MessageRow.id.in_([r.id for r in results]))
                    .where(MessageRow.worker_id == self.worker_id)
                    .where(MessageRow.status == Status.SENDING),
                    wait=True,
                )
            )
            mine = [r for r in results if r.id in owned]
            if mine:
                await self._write_results(session, mine, now)
            if suppress:
                await self._suppress(session, suppress, now)
        return [r.id for r in results if r.id not in owned]

    async def _write_results(
        self, session: AsyncSession, results: list[Result], now: datetime
    ) -> None:
        params = [self._result_params(r, now) for r in results]
        attempts = [r.attempt | {"message_id": r.id} for r in results if r.attempt]
        stmt = (
            update(MessageRow)
            .where(MessageRow.id == bindparam("b_id"))
            .where(MessageRow.worker_id == bindparam("b_worker"))
            .where(MessageRow.status == Status.SENDING)
            .values(
                status=bindparam("b_status"),
                attempts=bindparam("b_attempts"),
                rcpt_state=bindparam("b_rcpt_state", type_=MessageRow.rcpt_state.type),
                next_attempt_at=bindparam(
                    "b_next", type_=MessageRow.next_attempt_at.type
                ),
                last_error=bindparam("b_error"),
                last_code=bindparam("b_code"),
                last_enhanced=bindparam("b_enhanced"),
                last_reply=bindparam("b_reply"),
                possible_duplicate=bindparam("b_dup"),
                sent_at=bindparam("b_sent_at", type_=MessageRow.sent_at.type),
                worker_id=None,
                updated_at=now,
            )
        )
        conn = await session.connection()
        await conn.execute(stmt, params)
        if attempts:
            await conn.execute(insert(AttemptRow), attempts)
        await cause_index.write(
            session,
            (row for r in results for row in self._cause_rows(r)),
            # A first attempt had no failure before it (a replay removed the old).
            replacing=[r.id for r in results if r.attempts > 1],
        )
        first = [r.id for r in results if r.attempt and r.attempts == 1]
        if first:
            await conn.execute(
                update(MessageRow)
                .where(MessageRow.id.in_(first))
                .values(first_attempt_at=now)
            )

    async def _suppress(
        self, session: AsyncSession, entries: Sequence[tuple[str, str]], now: datetime
    ) -> None:
        wanted = {address.lower(): reply for address, reply in entries}
        existing = set(
            (
                await session.execute(
                    select(SuppressionRow.address).where(
                        SuppressionRow.address.in_(list(wanted))
                    )
                )
            ).scalars()
        )
        rows = [
            {
                "address": address,
                "reason": f"hard bounce: {reply}"[:2000],
                "source": "bounce",
                "created_at": now,
            }
            for address, reply in wanted.items()
            if address not in existing
        ]
        if rows:
            await session.execute(insert(SuppressionRow), rows)

    @staticmethod
    def _cause_rows(r: Result) -> list[dict[str, Any]]:
        return cause_index.cause_rows(
            r.id,
            r.status,
            r.last_code,
            r.last_enhanced,
            r.last_reply,
            r.last_error,
            r.rcpt_state,
        )

    def _result_params(self, r: Result, now: datetime) -> dict[str, Any]:
        return {
            "b_id": r.id,
            "b_worker": self.worker_id,
            "b_status": str(r.status),
            "b_attempts": r.attempts,
            "b_rcpt_state": r.rcpt_state,
            "b_next": r.next_attempt_at,
            "b_error": r.last_error,
            "b_code": r.last_code,
            "b_enhanced": r.last_enhanced,
            "b_reply": r.last_reply,
            "b_dup": r.possible_duplicate,
            "b_sent_at": now if r.sent else None,
        }

    # -- scheduling and recovery ------------------------------------------------------
    async def claim_due(self, now: datetime, limit: int) -> list[str]:
        """Scheduled messages whose time has come become ``queued``; returns their ids,
        which the caller publishes. Concurrent schedulers skip each other's rows."""
        due = (
            select(MessageRow.id)
            .where(MessageRow.status == Status.SCHEDULED)
            .where(MessageRow.next_attempt_at <= now)
            .order_by(MessageRow.next_attempt_at)
            .limit(limit)
        )
        if not await self._any(due):
            return []
        async with self.db.write() as session, session.begin():
            ids = await self._lock_ids(session, due)
            await self._mark_queued(session, ids, now, extra={"next_attempt_at": None})
            return ids

    async def requeue_stale(
        self, now: datetime, older_than: float, limit: int
    ) -> list[str]:
        """Queued messages nobody picked up for ``older_than`` seconds (their publish
        may have been lost in a crash): refreshed and returned to publish again. A
        second copy on the queue is harmless: only one delivery can claim the row."""
        stale = (
            select(MessageRow.id)
            .where(MessageRow.status == Status.QUEUED)
            .where(MessageRow.queued_at < now - timedelta(seconds=older_than))
            .limit(limit)
        )
        if not await self._any(stale):
            return []
        async with self.db.write() as session, session.begin():
            ids = await self._lock_ids(session, stale)
            await self._mark_queued(session, ids, now)
            return ids

    async def recover_orphans(self, now: datetime, stale_before: datetime) -> list[str]:
        """Messages owned by workers whose heartbeat stopped go back to ``queued``,
        flagged as possible duplicates: the dead worker may have sent them."""
        async with self.db.write() as session, session.begin():
            dead_workers = list(
                (
                    await session.execute(
                        select(WorkerRow.id)
                        .where(WorkerRow.stopped_at.is_(None))
                        .where(WorkerRow.heartbeat_at < stale_before)
                        .where(WorkerRow.id != self.worker_id)
                    )
                ).scalars()
            )
            if not dead_workers:
                return []
            ids = await self._lock_ids(
                session,
                select(MessageRow.id)
                .where(MessageRow.status == Status.SENDING)
                .where(MessageRow.worker_id.in_(dead_workers)),
            )
            note = "worker stopped responding while sending; it may have been delivered"
            await self._mark_queued(
                session,
                ids,
                now,
                extra={"possible_duplicate": True, "last_error": note},
            )
            await session.execute(
                update(WorkerRow)
                .where(WorkerRow.id.in_(dead_workers))
                .values(stopped_at=now)
            )
            return ids

    async def release(
        self, ids: Sequence[str], now: datetime, *, possible_duplicate: bool = False
    ) -> list[str]:
        """Messages this worker claimed go back to ``queued``: never tried, or
        (``possible_duplicate``) interrupted mid-send at shutdown."""
        if not ids:
            return []
        async with self.db.write() as session, session.begin():
            owned = await self._lock_ids(
                session,
                select(MessageRow.id)
                .where(MessageRow.id.in_(list(ids)))
                .where(MessageRow.status == Status.SENDING)
                .where(MessageRow.worker_id == self.worker_id),
                wait=True,
            )
            extra = {"possible_duplicate": True} if possible_duplicate else None
            await self._mark_queued(session, owned, now, extra=extra)
            return owned

    async def _any(self, stmt: Any) -> bool:
        """Whether ``stmt`` selects any row, asked without a lock. The scheduler asks
        every ``scheduler_interval``, and on SQLite a write transaction takes the
        database's one write lock even when it finds nothing to do."""
        async with self.db.read() as session:
            return (await session.execute(stmt.limit(1))).first() is not None

    async def _lock_ids(
        self, session: AsyncSession, stmt: Any, *, wait: bool = False
    ) -> list[str]:
        """Lock the selected rows. Shared work (due, stale, orphaned rows) skips rows
        someone else holds; rows this worker owns (``wait``) are waited for, in id
        order: an operator's transaction may lock a ``sending`` row just to refuse
        it, and skipping it would drop the result and leave the row ``sending``."""
        if self.db.supports_skip_locked:
            if wait:
                stmt = stmt.order_by(MessageRow.id).with_for_update()
            else:
                stmt = stmt.with_for_update(skip_locked=True)
        return list((await session.execute(stmt)).scalars())

    async def _mark_queued(
        self,
        session: AsyncSession,
        ids: list[str],
        now: datetime,
        extra: dict[str, Any] | None = None,
    ) -> None:
        if ids:
            await session.execute(
                update(MessageRow)
                .where(MessageRow.id.in_(ids))
                .values(
                    status=Status.QUEUED,
                    queued_at=now,
                    updated_at=now,
                    worker_id=None,
                    **(extra or {}),
                )
            )

    # -- workers ----------------------------------------------------------------------
    async def heartbeat(self, now: datetime, host: str, pid: int) -> None:
        async with self.db.write() as session, session.begin():
            row = await session.get(WorkerRow, self.worker_id)
            if row is None:
                session.add(
                    WorkerRow(
                        id=self.worker_id,
                        host=host,
                        pid=pid,
                        started_at=now,
                        heartbeat_at=now,
                    )
                )
            else:
                row.heartbeat_at = now

    async def stopped(self, now: datetime) -> None:
        async with self.db.write() as session, session.begin():
            await session.execute(
                update(WorkerRow)
                .where(WorkerRow.id == self.worker_id)
                .values(stopped_at=now)
            )


def _suppress_recipients(m: NewMessage, suppressed: dict[str, str]) -> NewMessage:
    hit = [r for r in m.recipients if r.lower() in suppressed]
    if not hit or m.status is Status.DEAD:
        return m
    state = {r: ("refused" if r in hit else s) for r, s in m.rcpt_state.items()}
    reasons = "; ".join(f"{r} ({suppressed[r.lower()]})" for r in hit)
    if "pending" in state.values():
        return replace(
            m, rcpt_state=state, last_error=f"suppressed recipients skipped: {reasons}"
        )
    return replace(
        m,
        status=Status.DEAD,
        rcpt_state=state,
        next_attempt_at=None,
        last_error=f"every recipient is on the suppression list: {reasons}",
    )


def _dedupe_key(item: NewMessage) -> str | None:
    if item.idempotency_key:
        return f"k:{item.idempotency_key}"
    if item.match_by_hash and item.body_sha256:
        return f"h:{item.body_sha256}"
    return None


def dump_payload(data: dict[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))
