"""The hot path: deliveries -> store (batched) -> ack -> render -> SMTP -> store (batched).

Three stages joined by bounded queues, so a slow relay slows consumption instead of
filling memory (unacked deliveries stay bounded by the prefetch window):

* **intake** collects deliveries into batches, commits them in one transaction and
  only then acks them;
* **senders** (``concurrency`` tasks) render and send claimed messages;
* **writer** commits attempt outcomes in batches.

Nothing here decides retry timing (that is :mod:`policy` via :mod:`outcomes`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from aio_pika.abc import AbstractIncomingMessage

from mailconsole.config import Settings
from mailconsole.engine import outcomes
from mailconsole.engine.broker import REF_HEADER, ack, nack
from mailconsole.engine.clock import Clock
from mailconsole.engine.events import (
    AttemptFailed,
    DuplicateSkipped,
    EventBus,
    MessageAccepted,
    MessageSent,
)
from mailconsole.engine.ids import new_message_id
from mailconsole.engine.render import Renderer, RenderError
from mailconsole.engine.smtp import SmtpFailure, SmtpPool
from mailconsole.engine.store.delivery import (
    Claimed,
    DeliveryStore,
    IngestOutcome,
    NewMessage,
    Ref,
    Result,
    dump_payload,
)
from mailconsole.engine.store.dto import Status
from mailconsole.engine.wire import MailJob, WireError, parse_job

log = logging.getLogger(__name__)

_T = TypeVar("_T")
OWN_ID = re.compile(r"^m-[0-9a-z]{26}$")
STORE_RETRY_DELAY = 1.0
"""Seconds between tries of a store write that failed (database down, disk full)."""


@dataclass(slots=True)
class Counters:
    received: int = 0
    sent: int = 0
    failed: int = 0
    dead: int = 0
    duplicates: int = 0
    in_flight: int = 0


@dataclass(slots=True)
class _Claim:
    claim: Claimed
    job: MailJob | None = None


def to_item(
    delivery: AbstractIncomingMessage, now_ts: float, max_bytes: int
) -> tuple[NewMessage | Ref, MailJob | None]:
    """Turn one delivery into what the store needs to accept it. Never raises."""
    ref = (delivery.headers or {}).get(REF_HEADER)
    if isinstance(ref, str | bytes) and ref:
        return Ref(ref.decode() if isinstance(ref, bytes) else ref), None
    body = delivery.body
    digest = hashlib.sha256(body).hexdigest()
    try:
        job = parse_job(body, max_bytes=max_bytes)
    except WireError as exc:
        return (
            NewMessage(
                id=new_message_id(),
                status=Status.DEAD,
                source_format="invalid",
                payload=None,
                raw_body=body,
                body_sha256=digest,
                match_by_hash=bool(delivery.redelivered),
                last_error=f"rejected on arrival: {exc}",
            ),
            None,
        )
    key = job.idempotency_key or delivery.message_id or None
    message_id = key if key and OWN_ID.match(key) else new_message_id()
    recipients = job.envelope_recipients()
    scheduled = job.send_at is not None and job.send_at.timestamp() > now_ts
    item = NewMessage(
        id=message_id,
        status=Status.SCHEDULED if scheduled else Status.SENDING,
        source_format=job.source_format,
        payload=dump_payload(job.to_json()),
        raw_body=None,
        idempotency_key=key,
        body_sha256=digest,
        match_by_hash=bool(delivery.redelivered) and key is None,
        sender=job.sender.email,
        recipients=recipients,
        rcpt_state=dict.fromkeys(recipients, outcomes.PENDING),
        subject=job.subject,
        priority=job.priority,
        next_attempt_at=job.send_at if scheduled else None,
    )
    return item, job


class Pipeline:
    """Consumes, stores, sends and records for one worker."""

    def __init__(
        self,
        settings: Settings,
        store: DeliveryStore,
        pool: SmtpPool,
        renderer: Renderer,
        clock: Clock,
        bus: EventBus,
    ) -> None:
        self.settings = settings
        self.store = store
        self.pool = pool
        self.renderer = renderer
        self.clock = clock
        self.bus = bus
        self.counters = Counters()
        self.rng = random.Random()
        self._incoming: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self._claims: asyncio.Queue[_Claim] = asyncio.Queue(
            maxsize=settings.concurrency * 2
        )
        self._results: asyncio.Queue[tuple[Result, asyncio.Future[None]]] = (
            asyncio.Queue()
        )
        self._sending: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._intake_busy = False
        self._writer_busy = False
        self._stopping = asyncio.Event()
        self._hard_bounces: list[tuple[str, str]] = []
        self.released: list[str] = []
        self._last_delivery = time.monotonic()

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._intake_loop(), name="intake"))
        self._tasks.append(asyncio.create_task(self._writer_loop(), name="writer"))
        for n in range(self.settings.concurrency):
            self._tasks.append(
                asyncio.create_task(self._sender_loop(), name=f"sender-{n}")
            )

    async def on_delivery(self, delivery: AbstractIncomingMessage) -> None:
        """The broker's consumer callback: hand over and return at once."""
        self.counters.received += 1
        self._last_delivery = time.monotonic()
        await self._incoming.put(delivery)

    @property
    def idle(self) -> bool:
        return (
            self._incoming.empty()
            and self._claims.empty()
            and self._results.empty()
            and not self._sending
            and not self._intake_busy
            and not self._writer_busy
        )

    def starved(self, seconds: float) -> bool:
        """Holding no delivery and none received for ``seconds``."""
        return self.idle and time.monotonic() - self._last_delivery > seconds

    async def stop(self, grace: float) -> None:
        """Stop after the broker stopped delivering: requeue what was not stored, let
        sends in flight finish within ``grace``, hand back claims never tried."""
        self._stopping.set()
        while not self._incoming.empty():
            await nack(self._incoming.get_nowait())
        deadline = time.monotonic() + grace
        while self._intake_busy and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        untried: list[str] = []
        while not self._claims.empty():
            untried.append(self._claims.get_nowait().claim.id)
        while self._sending and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        interrupted = list(self._sending)
        for task in self._tasks:
            if task.get_name().startswith("sender") or task.get_name() == "intake":
                task.cancel()
        await asyncio.gather(*self._tasks[2:], self._tasks[0], return_exceptions=True)
        while self._writer_busy or not self._results.empty():
            await asyncio.sleep(0.01)
        self._tasks[1].cancel()
        await asyncio.gather(self._tasks[1], return_exceptions=True)
        self.released = await asyncio.shield(self._release(untried, interrupted))

    async def _release(self, untried: list[str], interrupted: list[str]) -> list[str]:
        now = self.clock.now()
        ids = await self.store.release(untried, now)
        if interrupted:
            ids += await self.store.release(interrupted, now, possible_duplicate=True)
        return ids

    # -- intake -----------------------------------------------------------------------
    async def _intake_loop(self) -> None:
        while True:
            # Claim no more than the senders can start soon: every claimed row is
            # flagged "possible duplicate" if this worker dies holding it.
            room = self._claims.maxsize - self._claims.qsize()
            batch = await self._drain(self._incoming, max(1, room))
            self._intake_busy = True
            try:
                await self._intake(batch)
            finally:
                self._intake_busy = False

    async def _drain(
        self, queue: asyncio.Queue[_T], limit: int | None = None
    ) -> list[_T]:
        batch = [await queue.get()]
        deadline = time.monotonic() + self.settings.batch_wait
        size = min(limit or self.settings.batch_size, self.settings.batch_size)
        while len(batch) < size:
            if queue.empty():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(queue.get(), remaining))
                except TimeoutError:
                    break
            else:
                batch.append(queue.get_nowait())
        return batch

    async def _intake(self, deliveries: list[AbstractIncomingMessage]) -> None:
        now_ts = self.clock.now().timestamp()
        max_bytes = self.settings.smtp.max_message_size * 2
        prepared = [to_item(d, now_ts, max_bytes) for d in deliveries]
        items = [p[0] for p in prepared]
        results = await self._store_retrying(items)
        if results is None:  # stopping while the store is down: the broker redelivers
            for delivery in deliveries:
                await nack(delivery)
            return
        for delivery in deliveries:
            await ack(delivery)
        for (_, job), outcome in zip(prepared, results, strict=True):
            await self._dispatch(outcome, job)

    async def _store_retrying(
        self, items: Sequence[NewMessage | Ref]
    ) -> list[IngestOutcome] | None:
        while True:
            try:
                return await self.store.ingest(items, self.clock.now())
            except Exception as exc:
                log.error(
                    "store unavailable, %d deliveries wait unacked: %s", len(items), exc
                )
                if self._stopping.is_set():
                    return None
                await asyncio.sleep(STORE_RETRY_DELAY)

    async def _dispatch(self, outcome: IngestOutcome, job: MailJob | None) -> None:
        now = self.clock.now()
        if outcome.action == "duplicate" and outcome.message_id:
            self.counters.duplicates += 1
            self.bus.publish(DuplicateSkipped(now, outcome.message_id))
        elif outcome.action == "stored" and outcome.message_id:
            if outcome.status == Status.DEAD:
                self.counters.dead += 1
            self.bus.publish(
                MessageAccepted(now, outcome.message_id, outcome.status or "")
            )
        elif outcome.action == "send" and outcome.claimed is not None:
            await self._claims.put(_Claim(outcome.claimed, job))

    # -- senders ----------------------------------------------------------------------
    async def _sender_loop(self) -> None:
        while True:
            item = await self._claims.get()
            self._sending.add(item.claim.id)
            self.counters.in_flight += 1
            try:
                result = await self._send(item)
                # Wait for the commit before taking the next message: what a crash can
                # send twice (relay said 250, store does not know) stays <= concurrency.
                committed = asyncio.get_running_loop().create_future()
                await self._results.put((result, committed))
                await committed
                self._sending.discard(item.claim.id)
            finally:
                self.counters.in_flight -= 1

    async def _send(self, item: _Claim) -> Result:
        claim = item.claim
        pending = tuple(r for r, s in claim.rcpt_state.items() if s == outcomes.PENDING)
        try:
            job = item.job or parse_job(claim.payload.encode())
            rendered = self.renderer.render(
                job,
                message_id=claim.id,
                date=claim.created_at,
                recipients=pending,
                smtputf8_available=bool(self.pool.smtputf8_available),
            )
        except (WireError, RenderError) as exc:
            return outcomes.rejected(claim, f"cannot be rendered: {exc}")
        started = self.clock.now()
        t0 = time.perf_counter()
        try:
            sent = await self.pool.send(
                rendered.envelope_from,
                rendered.recipients,
                rendered.data,
                smtputf8=rendered.smtputf8,
            )
        except SmtpFailure as failure:
            ctx = self._ctx(claim, pending, started, t0)
            result, hard = outcomes.after_failure(
                ctx,
                failure,
                rendered.recipients,
                now=started,
                retry=self.settings.retry,
                rng=self.rng,
            )
        else:
            ctx = self._ctx(claim, pending, started, t0)
            result, hard = outcomes.after_send(
                ctx,
                sent,
                rendered.recipients,
                now=started,
                retry=self.settings.retry,
                rng=self.rng,
            )
        if hard and self.settings.suppress_hard_bounces:
            self._hard_bounces.extend(
                (
                    ctx.recipients[rendered.recipients.index(h.recipient)]
                    if h.recipient in rendered.recipients
                    else h.recipient,
                    h.text,
                )
                for h in hard
            )
        return result

    def _ctx(
        self, claim: Claimed, pending: tuple[str, ...], started: object, t0: float
    ) -> outcomes.AttemptContext:
        return outcomes.AttemptContext(
            claim=claim,
            recipients=pending,
            started_at=started,  # type: ignore[arg-type]
            duration_ms=int((time.perf_counter() - t0) * 1000),
            worker_id=self.store.worker_id,
        )

    # -- writer -----------------------------------------------------------------------
    async def _writer_loop(self) -> None:
        while True:
            batch = await self._drain(self._results)
            self._writer_busy = True
            try:
                await self._write([result for result, _ in batch])
            finally:
                self._writer_busy = False
            for _, committed in batch:
                if not committed.done():
                    committed.set_result(None)

    async def _write(self, batch: list[Result]) -> None:
        bounces, self._hard_bounces = self._hard_bounces, []
        while True:
            try:
                await self.store.record_results(
                    batch, self.clock.now(), suppress=bounces
                )
                break
            except Exception as exc:
                log.error(
                    "store unavailable, %d results wait in memory: %s", len(batch), exc
                )
                await asyncio.sleep(STORE_RETRY_DELAY)
        now = self.clock.now()
        for r in batch:
            if r.sent:
                self.counters.sent += 1
                duration = int(r.attempt["duration_ms"]) if r.attempt else 0
                self.bus.publish(MessageSent(now, r.id, tuple(r.rcpt_state), duration))
            else:
                self.counters.failed += 1
                if r.status is Status.DEAD:
                    self.counters.dead += 1
                self.bus.publish(
                    AttemptFailed(now, r.id, str(r.status), r.last_error or "")
                )
                log.info(
                    "message %s attempt %d: %s -> %s",
                    r.id,
                    r.attempts,
                    r.last_error,
                    r.status,
                )
