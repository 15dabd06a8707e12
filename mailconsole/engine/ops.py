"""The one operations API: every read and action of the console and the CLI.

Callers (screens, CLI commands) use only this class and the frozen records it
returns; they never open a store session or a broker channel themselves. Every
mutation is one transaction per message or batch and writes an audit row (who,
when, what, on which messages or filter, how many, why). Safe while workers run:
state changes are conditional on the state the operator saw, and the consumer's
own claim on a row is what prevents a double send.

Reads are in :mod:`.store.queries`, transitions in :mod:`.store.admin` (rules in
:mod:`.store.rules`), bulk runs in :mod:`.ops_bulk`, display rendering in
:mod:`.ops_preview`, the records in :mod:`.ops_records` (re-exported here). This
module parses filters, audits, publishes refs after commits and reports; it must
not build SQL itself. It runs past the 400-line guide because it is the whole
public surface (one documented method per operation), not because logic piles up.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from sqlalchemy.exc import SQLAlchemyError

from mailconsole.config import Settings, mask_url
from mailconsole.engine import broker_stats, filters
from mailconsole.engine.broker import Broker
from mailconsole.engine.clock import Clock
from mailconsole.engine.errors import (
    BrokerUnavailable,
    MailconsoleError,
    NotFound,
)
from mailconsole.engine.events import Event, EventBus, OperatorActed
from mailconsole.engine.ids import new_message_id
from mailconsole.engine.ops_bulk import (
    BulkRun,
    Progress,
    RefPublisher,
    Spec,
    refusals,
    spec_for,
)
from mailconsole.engine.ops_preview import Preview, of_job, of_stored
from mailconsole.engine.ops_records import ActionReport, Page, Plan, Stats
from mailconsole.engine.store.admin import AdminStore, AuditInfo
from mailconsole.engine.store.cause_index import FAILED
from mailconsole.engine.store.causes import FailureGroup
from mailconsole.engine.store.db import Database
from mailconsole.engine.store.delivery import NewMessage, dump_payload
from mailconsole.engine.store.dto import MessageDetail, Status
from mailconsole.engine.store.queries import Queries
from mailconsole.engine.store.stats import read_stats
from mailconsole.engine.wire import MailJob, WireError, parse_email, parse_job

__all__ = [
    "ActionReport",
    "FailureGroup",
    "Ops",
    "Page",
    "Plan",
    "Preview",
    "Progress",
    "Stats",
]

BrokerMode = Literal["required", "optional", "none"]


class Ops:
    """Queries and commands over one store and broker. Construct with :meth:`open`."""

    def __init__(
        self,
        settings: Settings,
        *,
        db: Database,
        broker: Broker | None,
        bus: EventBus,
        clock: Clock,
        actor: str,
        wake_scheduler: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.broker = broker
        self.bus = bus
        self.clock = clock
        self.actor = actor
        self._wake_scheduler = wake_scheduler
        self._queries = Queries(db)
        self._publish = RefPublisher(broker, bus, clock, settings.requeue_stale_after)
        self._admin = AdminStore(db)
        management = management_url(settings)
        self._unacked = (
            broker_stats.UnackedCount(management, settings.queue)
            if management
            else None
        )
        self._owned = False

    @classmethod
    async def open(
        cls,
        settings: Settings,
        *,
        clock: Clock | None = None,
        bus: EventBus | None = None,
        actor: str | None = None,
        broker: BrokerMode = "required",
    ) -> Ops:
        """Ops over a store of their own (upgraded to the latest schema) and, unless
        ``broker="none"``, a broker link; ``"optional"`` carries on without one.

        Raises:
            BrokerUnavailable: ``broker="required"`` and RabbitMQ did not answer.
            MailconsoleError: the store did not answer (or could not be upgraded).
        """
        url = settings.database_url.get_secret_value()
        db = Database(url)
        link: Broker | None = None
        try:
            try:
                await db.upgrade()
            except (OSError, SQLAlchemyError) as exc:
                # One line for the operator, not a driver traceback.
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise MailconsoleError(
                    f"the store is not reachable at {mask_url(url)}: {reason}"
                ) from None
            if broker != "none":
                link = Broker(
                    settings.amqp_url.get_secret_value(),
                    settings.queue,
                    publish_timeout=settings.publish_timeout,
                )
                try:
                    await link.connect()
                except BrokerUnavailable:
                    if broker == "required":
                        raise
                    link = None
        except BaseException:
            await db.dispose()
            raise
        ops = cls(
            settings,
            db=db,
            broker=link,
            bus=bus or EventBus(),
            clock=clock or Clock(),
            actor=actor or getpass.getuser(),
        )
        ops._owned = True
        return ops

    async def close(self) -> None:
        """Close what :meth:`open` opened (an engine's ops leave its links alone)."""
        if not self._owned:
            return
        if self.broker is not None:
            await self.broker.close()
        await self.db.dispose()

    async def __aenter__(self) -> Ops:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- reads ------------------------------------------------------------------------
    async def list_messages(
        self, query: str = "", *, limit: int = 100, cursor: str | None = None
    ) -> Page:
        """Messages matching a filter (see docs/filters.md), newest first.

        Raises:
            FilterError: the query does not parse.
        """
        clauses = await self._where(query)
        items, next_cursor = await self._queries.page(clauses, max(1, limit), cursor)
        return Page(tuple(items), next_cursor)

    async def count(self, query: str = "") -> int:
        return await self._queries.count(await self._where(query))

    async def show(self, message_id: str) -> MessageDetail:
        """Raises NotFound."""
        detail = await self._queries.detail(message_id)
        if detail is None:
            raise NotFound(f"no message {message_id}")
        return detail

    async def stats(self) -> Stats:
        now = self.clock.now()
        store = await read_stats(self.db, now)
        depth = await self.broker.depth() if self.broker is not None else None
        unacked = None
        if depth is not None and self._unacked is not None:
            unacked = await self._unacked.get()
        oldest = store.oldest_waiting
        return Stats(
            by_status=store.by_status,
            queue_ready=depth.ready if depth else None,
            queue_unacked=unacked,
            consumers=depth.consumers if depth else None,
            sent_last_minute=store.sent_last_minute,
            sent_last_hour=store.sent_last_hour,
            failed_last_minute=store.failed_last_minute,
            failed_last_hour=store.failed_last_hour,
            oldest_waiting_age=(now - oldest).total_seconds() if oldest else None,
            sent_per_minute=store.sent_per_minute,
            failed_per_minute=store.failed_per_minute,
        )

    async def failures(
        self, query: str = "status:dead", *, limit: int = 50
    ) -> list[FailureGroup]:
        """Failures grouped by cause, largest first (``status:dead`` or
        ``status:scheduled``; without a status both)."""
        f = filters.parse(query)
        return await self._queries.failures(f, self.clock.now(), limit)

    def events(self) -> AsyncIterator[Event]:
        """Engine events (when an engine runs in this process) and operator actions."""
        return self.bus.subscribe()

    # -- writes -----------------------------------------------------------------------
    async def plan(self, action: str, query: str, *, force: bool = False) -> Plan:
        """What ``action`` would do to the messages ``query`` selects: how many, their
        recipient domains and failure causes, and which it would refuse."""
        spec = spec_for(action, force=force)
        f = filters.parse(query).with_statuses(spec.statuses)
        now = self.clock.now()
        clauses = await self._queries.where(f, now)
        refused = await refusals(self._queries, spec, clauses, now)
        failed = f.with_statuses(tuple(str(s) for s in FAILED))
        groups = await self._queries.failures(failed, now, 10)
        return Plan(
            action=action,
            filter=query,
            count=await self._queries.count(clauses) - len(refused),
            domains=tuple(await self._queries.domains(clauses)),
            causes=tuple((g.label, g.count) for g in groups),
            skipped=tuple(refused[:20]),
            skipped_count=len(refused),
        )

    async def replay(
        self,
        ids: Sequence[str] = (),
        *,
        query: str | None = None,
        force: bool = False,
        reason: str | None = None,
        rate: float | None = None,
        dry_run: bool = False,
        progress: Progress | None = None,
    ) -> ActionReport:
        """Back to ``queued`` (same Message-ID, attempts counted afresh, history kept)
        and published by ref. See :func:`rules.decide_replay` for the accepted-
        recipient rule that ``force`` relaxes."""
        args = {"force": force, "rate": rate}
        return await self._act(
            spec_for("replay", force=force),
            ids,
            query,
            reason,
            args,
            dry_run=dry_run,
            rate=rate,
            progress=progress,
        )

    async def retry_now(
        self,
        ids: Sequence[str] = (),
        *,
        query: str | None = None,
        reason: str | None = None,
        dry_run: bool = False,
    ) -> ActionReport:
        """Scheduled messages become due now; the scheduler (woken here when it runs
        in this process, else within its interval) queues them."""
        report = await self._act(
            spec_for("retry-now"), ids, query, reason, {}, dry_run=dry_run
        )
        if report.done and not dry_run and self._wake_scheduler is not None:
            self._wake_scheduler()
        return report

    async def hold(
        self,
        ids: Sequence[str] = (),
        *,
        query: str | None = None,
        reason: str | None = None,
        dry_run: bool = False,
    ) -> ActionReport:
        """Queued or scheduled messages are held (never sent) until released."""
        spec = spec_for("hold")
        return await self._act(spec, ids, query, reason, {}, dry_run=dry_run)

    async def release(
        self,
        ids: Sequence[str] = (),
        *,
        query: str | None = None,
        reason: str | None = None,
        dry_run: bool = False,
    ) -> ActionReport:
        """Held messages go back where they were: scheduled keeps its due time,
        queued is published again."""
        spec = spec_for("release")
        return await self._act(spec, ids, query, reason, {}, dry_run=dry_run)

    async def delete(
        self,
        ids: Sequence[str] = (),
        *,
        query: str | None = None,
        reason: str | None = None,
        dry_run: bool = False,
    ) -> ActionReport:
        """Waiting or dead messages become ``deleted`` (the row and history stay)."""
        spec = spec_for("delete")
        return await self._act(spec, ids, query, reason, {}, dry_run=dry_run)

    async def edit(
        self,
        message_id: str,
        job: Mapping[str, Any],
        *,
        reason: str | None = None,
        dry_run: bool = False,
    ) -> str:
        """Store a corrected copy (linked to the original) and queue it; returns its id.
        Raises WireError (invalid job), NotFound, WrongState."""
        body = json.dumps({k: v for k, v in job.items() if k != "id"}).encode()
        parsed = parse_job(body, max_bytes=self.settings.smtp.max_message_size * 2)
        now = self.clock.now()
        new = _edited_copy(parsed, now)
        new_id, later = new.id, new.status == Status.SCHEDULED
        audit = self._audit("edit", reason, None, {"new_id": new_id})
        await self._admin.create_edited(message_id, new, now, audit, dry_run=dry_run)
        if not dry_run:
            if not later:
                await self._publish([new_id], "edited copy")
            self.bus.publish(OperatorActed(now, "edit", (message_id, new_id), 1))
        return new_id

    async def suppress(self, address: str, *, reason: str | None = None) -> bool:
        """Never send to ``address`` again; ``False`` if it was listed already."""
        clean = _address(address)
        audit = self._audit("suppress", reason, None, {})
        return await self._admin.suppress(
            clean, reason or "added by an operator", self.clock.now(), audit
        )

    async def unsuppress(self, address: str, *, reason: str | None = None) -> None:
        """Raises NotFound when the address is not listed."""
        audit = self._audit("unsuppress", reason, None, {})
        await self._admin.unsuppress(_address(address), self.clock.now(), audit)

    async def suppressions(self, search: str = "") -> list[tuple[str, str, datetime]]:
        """(address, reason, since), newest first."""
        rows = await self._admin.suppressions(search)
        return [(a, r, at) for a, r, _, at in rows]

    # -- transfer ---------------------------------------------------------------------
    async def export_jobs(
        self, query: str, *, reason: str | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """``{"job": <extended job or None>, "meta": {...}}`` for each match, in id
        (so roughly arrival) order, read in batches: bounded memory at any size."""
        clauses = await self._where(query)
        count, after = 0, ""
        while True:
            records, after = await self._queries.export_page(clauses, after, 500)
            count += len(records)
            for record in records:
                yield record
            if not after:
                break
        audit = self._audit("export", reason, query, {})
        await self._admin.record(audit, self.clock.now(), count)

    async def import_jobs(
        self,
        jobs: Sequence[Mapping[str, Any]],
        *,
        reason: str | None = None,
        dry_run: bool = False,
    ) -> list[str]:
        """Validate every job, then publish them all as new jobs; returns their ids.

        Raises:
            WireError: a job is invalid (nothing is published); its text names it.
        """
        from mailconsole.engine.publisher import prepare, publish_jobs

        for job in jobs:
            prepare(job)
        if dry_run:
            return []
        ids = await publish_jobs(self._require_broker(), jobs)
        audit = self._audit("import", reason, None, {"ids": ids[:1000]})
        await self._admin.record(audit, self.clock.now(), len(ids))
        return ids

    # -- composing --------------------------------------------------------------------
    def validate(self, job: Mapping[str, Any]) -> list[str]:
        """Problems with a job, each one line naming the field; empty when valid."""
        try:
            parse_job(json.dumps(dict(job)).encode())
        except WireError as exc:
            return [str(exc)]
        return []

    def preview(self, job: Mapping[str, Any]) -> Preview:
        return of_job(self.settings, job, self.clock.now())

    async def rendered(self, message_id: str) -> Preview:
        """A stored message as the relay gets it (headers, text, HTML source)."""
        return of_stored(self.settings, await self.show(message_id))

    async def send(self, job: Mapping[str, Any]) -> str:
        """Publish a job (persistent, confirmed); returns its id."""
        from mailconsole.engine.publisher import publish_jobs

        return (await publish_jobs(self._require_broker(), [job]))[0]

    # -- internals --------------------------------------------------------------------
    async def _where(self, query: str) -> list[Any]:
        return await self._queries.where(filters.parse(query), self.clock.now())

    def _audit(
        self, action: str, reason: str | None, query: str | None, args: dict[str, Any]
    ) -> AuditInfo:
        clean = {k: v for k, v in args.items() if v is not None}
        return AuditInfo(
            self.actor, action, uuid.uuid4().hex[:12], reason, query, clean
        )

    async def _act(
        self,
        spec: Spec,
        ids: Sequence[str],
        query: str | None,
        reason: str | None,
        args: dict[str, Any],
        *,
        dry_run: bool,
        rate: float | None = None,
        progress: Progress | None = None,
    ) -> ActionReport:
        if bool(ids) == (query is not None):
            raise MailconsoleError(f"{spec.action}: give message ids or a filter")
        audit = self._audit(spec.action, reason, query, args)
        run = self._run(spec, audit, dry_run=dry_run, rate=rate, progress=progress)
        if query is None:
            report = await run.over_ids(ids)
        else:
            f = filters.parse(query).with_statuses(spec.statuses)
            report = await run.over_matches(
                await self._queries.where(f, self.clock.now())
            )
        now = self.clock.now()
        if not dry_run and query is not None:
            counts = {"done": len(report.done), "skipped": len(report.skipped)}
            counts["failed"] = len(report.failed)
            await self._admin.summary(audit, now, len(report.done), counts)
        if not dry_run and report.done:
            self.bus.publish(OperatorActed(now, spec.action, report.done[:1000]))
        return report

    def _run(
        self,
        spec: Spec,
        audit: AuditInfo,
        *,
        dry_run: bool,
        rate: float | None = None,
        progress: Progress | None = None,
    ) -> BulkRun:
        return BulkRun(
            spec,
            audit,
            queries=self._queries,
            admin=self._admin,
            clock=self.clock,
            publish=self._publish,
            dry_run=dry_run,
            rate=rate,
            progress=progress,
        )

    def _require_broker(self) -> Broker:
        if self.broker is None:
            raise BrokerUnavailable("not connected to RabbitMQ")
        return self.broker


def management_url(settings: Settings) -> str | None:
    """Where to ask for the unacknowledged count (``amqp_management_url``)."""
    configured = settings.amqp_management_url
    if configured is None:
        return broker_stats.management_url_for(settings.amqp_url.get_secret_value())
    value = configured.get_secret_value()
    return None if value in ("", "off") else value


def _address(address: str) -> str:
    try:
        return parse_email(address.strip(), field="address").lower()
    except WireError as exc:
        raise MailconsoleError(str(exc)) from None


def _edited_copy(job: MailJob, now: datetime) -> NewMessage:
    """The new row for an edited job: a message of its own (new id and idempotency
    key, so it is never taken for a duplicate of the original)."""
    new_id = new_message_id()
    payload = dump_payload({**job.to_json(), "id": new_id})
    later = job.send_at is not None and job.send_at > now
    recipients = job.envelope_recipients()
    return NewMessage(
        id=new_id,
        status=Status.SCHEDULED if later else Status.QUEUED,
        source_format=job.source_format,
        payload=payload,
        raw_body=None,
        idempotency_key=new_id,
        body_sha256=hashlib.sha256(payload.encode()).hexdigest(),
        sender=job.sender.email,
        recipients=recipients,
        rcpt_state=dict.fromkeys(recipients, "pending"),
        subject=job.subject,
        priority=job.priority,
        next_attempt_at=job.send_at if later else None,
    )
