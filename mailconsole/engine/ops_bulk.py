"""How the operations API runs one action over many messages: batch by batch.

Each batch is one store transaction (:meth:`AdminStore.apply`); refs of the messages
it queued are published right after its commit, so a crash loses at most the
publishes of one batch (the rows stay queued and a worker's stale sweep publishes
them). Filter-selected runs walk the matches by id and skip rows a worker has
locked; ``rate`` throttles, ``progress`` reports. Part of :mod:`.ops`, not an API of
its own: it must not parse filters or talk to callers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from mailconsole.engine.broker import Broker
from mailconsole.engine.clock import Clock
from mailconsole.engine.errors import BrokerUnavailable, MailconsoleError, PublishFailed
from mailconsole.engine.events import EventBus, MessageQueued
from mailconsole.engine.ops_records import ActionReport
from mailconsole.engine.store import rules
from mailconsole.engine.store.admin import AdminStore, AuditInfo
from mailconsole.engine.store.dto import Status
from mailconsole.engine.store.queries import Queries
from mailconsole.engine.store.rules import Decide

BATCH = 500
"""Messages per transaction: big enough to be quick, small enough that a worker
never waits long on our locks."""

Progress = Callable[[int, int], None]
"""Called after each batch with (messages handled so far, total)."""
Publish = Callable[[Sequence[str], str], Awaitable[list[tuple[str, str]]]]
"""Publishes refs; returns (id, why) for those that failed."""


@dataclass(frozen=True, slots=True)
class Spec:
    """One operator action: its rule and the states a filter-selected run looks at."""

    action: str
    decide: Decide
    statuses: tuple[str, ...]


def spec_for(action: str, *, force: bool = False) -> Spec:
    """The rule and candidate states of an operator action by its CLI name."""
    if action == "replay":
        decide = partial(rules.decide_replay, force=force)
        return Spec(action, decide, tuple(str(s) for s in rules.REPLAYABLE))
    table: dict[str, tuple[Decide, tuple[str, ...]]] = {
        "retry-now": (rules.decide_retry_now, (Status.SCHEDULED,)),
        "hold": (rules.decide_hold, rules.HOLDABLE),
        "release": (rules.decide_release, (Status.HELD,)),
        "delete": (rules.decide_delete, rules.DELETABLE),
    }
    if action not in table:
        raise MailconsoleError(f"unknown action {action!r}")
    decide_fn, statuses = table[action]
    return Spec(action, decide_fn, tuple(str(s) for s in statuses))


async def refusals(
    queries: Queries, spec: Spec, clauses: list[Any], now: datetime
) -> list[tuple[str, str]]:
    """(id, why) for every match the rule would refuse, read without locks (a plan
    is a read: the run itself decides again under its locks)."""
    out: list[tuple[str, str]] = []
    after = ""
    while rows := await queries.states(clauses, after, BATCH):
        after = rows[-1].id
        decided = [(row, spec.decide(row, now)) for row in rows]
        queuing = [(r, d) for r, d in decided if isinstance(d, rules.Change)]
        addresses = {
            a.lower() for r, d in queuing for a in rules.pending_recipients(d, r)
        }
        listed = await queries.suppressed(addresses)
        for row, decision in decided:
            if listed and isinstance(decision, rules.Change):
                decision = rules.without_suppressed(decision, row, listed)
            if isinstance(decision, str):
                out.append((row.id, decision))
    return out


class RefPublisher:
    """Publishes refs of queued messages after their commit, concurrently (the
    broker's confirms pipeline). A row whose publish failed stays queued: a
    worker's stale sweep publishes it within ``requeue_stale_after``."""

    def __init__(
        self, broker: Broker | None, bus: EventBus, clock: Clock, stale_after: float
    ) -> None:
        self.broker, self.bus, self.clock = broker, bus, clock
        self.stale_after = stale_after

    async def __call__(self, ids: Sequence[str], cause: str) -> list[tuple[str, str]]:
        results = await asyncio.gather(*(self._one(i, cause) for i in ids))
        return [r for r in results if r is not None]

    async def _one(self, message_id: str, cause: str) -> tuple[str, str] | None:
        try:
            if self.broker is None:
                raise BrokerUnavailable("not connected to RabbitMQ")
            await self.broker.publish_ref(message_id)
        except (PublishFailed, BrokerUnavailable) as exc:
            return message_id, (
                f"queued, but not published ({exc}); a running worker "
                f"publishes it within {self.stale_after:g}s"
            )
        self.bus.publish(MessageQueued(self.clock.now(), message_id, cause))
        return None


class BulkRun:
    """One action over a list of ids or a filter's matches."""

    def __init__(
        self,
        spec: Spec,
        audit: AuditInfo,
        *,
        queries: Queries,
        admin: AdminStore,
        clock: Clock,
        publish: Publish,
        dry_run: bool = False,
        rate: float | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.spec, self.audit = spec, audit
        self.queries, self.admin, self.clock, self.publish = (
            queries,
            admin,
            clock,
            publish,
        )
        self.dry_run, self.rate, self.progress = dry_run, rate, progress
        self.size = BATCH if not rate else max(1, min(BATCH, int(rate)))
        self.done: list[str] = []
        self.skipped: list[tuple[str, str]] = []
        self.failed: list[tuple[str, str]] = []
        self.total = 0
        self._started = time.monotonic()

    async def over_ids(self, ids: Sequence[str]) -> ActionReport:
        unique = list(dict.fromkeys(ids))
        self.total = len(unique)
        for n in range(0, len(unique), self.size):
            await self._batch(unique[n : n + self.size], skip_locked=False)
        return self.report()

    async def over_matches(self, clauses: list[Any]) -> ActionReport:
        self.total = await self.queries.count(clauses)
        after = ""
        # By id: rows this action changes or refuses are never visited twice, and
        # rows that start matching behind us are left alone (they were not planned).
        while ids := await self.queries.ids(clauses, after, self.size):
            after = ids[-1]
            await self._batch(ids, skip_locked=True)
        return self.report()

    async def _batch(self, ids: list[str], *, skip_locked: bool) -> None:
        batch = await self.admin.apply(
            ids,
            self.spec.decide,
            self.audit,
            self.clock.now(),
            skip_locked=skip_locked,
            dry_run=self.dry_run,
        )
        self.skipped += batch.skipped
        failed: list[tuple[str, str]] = []
        if not self.dry_run:
            queued = [c.id for c in batch.done if c.publish]
            failed = await self.publish(queued, self.spec.action)
        bad = {message_id for message_id, _ in failed}
        self.failed += failed
        self.done += [c.id for c in batch.done if c.id not in bad]
        handled = len(self.done) + len(self.skipped) + len(self.failed)
        if self.progress is not None:
            self.progress(handled, max(self.total, handled))
        if self.rate:
            ahead = handled / self.rate - (time.monotonic() - self._started)
            if ahead > 0:
                await asyncio.sleep(ahead)

    def report(self) -> ActionReport:
        return ActionReport(
            self.spec.action,
            tuple(self.done),
            tuple(self.skipped),
            tuple(self.failed),
            self.dry_run,
        )
