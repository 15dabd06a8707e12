"""Background loops of a worker: due retries, lost publishes, dead workers, watchdog.

Each loop claims rows in the store (so several workers never take the same one) and
publishes them back to the queue by reference; the consumer's claim on the row is
what prevents a double send, not the publish. Loops stop on the engine's stop event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from datetime import timedelta

from mailconsole.config import Settings
from mailconsole.engine.broker import Broker
from mailconsole.engine.clock import Clock
from mailconsole.engine.errors import PublishFailed
from mailconsole.engine.events import EngineStateChanged, EventBus, MessageQueued
from mailconsole.engine.store.delivery import DeliveryStore

log = logging.getLogger(__name__)

CLAIM_LIMIT = 500
WATCHDOG_INTERVAL = 5.0


class Scheduler:
    """Runs the periodic work of one engine."""

    def __init__(
        self,
        settings: Settings,
        store: DeliveryStore,
        broker: Broker,
        clock: Clock,
        bus: EventBus,
        starved: Callable[[], bool] = lambda: False,
    ) -> None:
        self.settings = settings
        self._starved = starved
        self.store = store
        self.broker = broker
        self.clock = clock
        self.bus = bus
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()

    def start(self) -> None:
        every = self.settings.scheduler_interval
        beat = self.settings.heartbeat_interval
        self._tasks = [
            asyncio.create_task(
                self._every(every, self.tick, wake=True), name="scheduler"
            ),
            asyncio.create_task(self._every(beat, self.heartbeat), name="heartbeat"),
            asyncio.create_task(
                self._every(WATCHDOG_INTERVAL, self.watchdog), name="watchdog"
            ),
        ]

    def wake(self) -> None:
        """Run the scheduler now (an operator made something due)."""
        self._wake.set()

    async def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _every(
        self, interval: float, job: Callable[[], Awaitable[object]], wake: bool = False
    ) -> None:
        while not self._stop.is_set():
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a loop must outlive a database or broker outage
                log.error("%s failed: %s", getattr(job, "__name__", job), exc)
            waiter = self._wake if wake else self._stop
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter.wait(), interval)
            if wake:
                self._wake.clear()

    async def tick(self) -> int:
        """Publish what is due now; returns how many messages were queued."""
        now = self.clock.now()
        due = await self.store.claim_due(now, CLAIM_LIMIT)
        stale = await self.store.requeue_stale(
            now, self.settings.requeue_stale_after, CLAIM_LIMIT
        )
        await self.publish(due, "due")
        await self.publish(stale, "not picked up; published again")
        return len(due) + len(stale)

    async def heartbeat(self) -> None:
        now = self.clock.now()
        await self.store.heartbeat(now, socket.gethostname(), os.getpid())
        stale_before = now - timedelta(seconds=3 * self.settings.heartbeat_interval)
        orphans = await self.store.recover_orphans(now, stale_before)
        if orphans:
            log.warning(
                "recovered %d messages from a worker that stopped", len(orphans)
            )
        await self.publish(orphans, "recovered from a stopped worker")

    async def watchdog(self) -> None:
        if await self.broker.ensure_consuming(starved=self._starved()):
            self.bus.publish(
                EngineStateChanged(
                    self.clock.now(), "broker", True, "consumer re-registered"
                )
            )

    async def publish(self, ids: list[str], cause: str) -> None:
        """Publish stored messages by reference. A failed publish leaves the row
        queued; the stale sweep publishes it again later."""
        for message_id in ids:
            try:
                await self.broker.publish_ref(message_id)
            except PublishFailed as exc:
                log.warning("message %s: %s; will publish again later", message_id, exc)
                return
            self.bus.publish(MessageQueued(self.clock.now(), message_id, cause))
