"""The engine: builds the parts from settings, starts them in order, stops them in reverse.

Hosted by the headless worker (``--no-ui``) and by the console alike; it never
imports UI code. ``stop()`` is what a signal handler or the console's quit calls.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time

from mailconsole.config import Settings
from mailconsole.engine.broker import Broker
from mailconsole.engine.clock import Clock
from mailconsole.engine.events import EngineStateChanged, EventBus
from mailconsole.engine.ids import new_worker_id
from mailconsole.engine.ops import Ops
from mailconsole.engine.pipeline import Pipeline
from mailconsole.engine.render import Renderer
from mailconsole.engine.scheduler import Scheduler
from mailconsole.engine.smtp import SmtpPool
from mailconsole.engine.store.db import Database
from mailconsole.engine.store.delivery import DeliveryStore

log = logging.getLogger(__name__)


class Engine:
    """One worker: consumer, senders, scheduler, over one store and one broker link."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        bus: EventBus | None = None,
        consume: bool = True,
    ) -> None:
        self.settings = settings
        self.clock = clock or Clock()
        self.bus = bus or EventBus()
        self.consume = consume
        self.worker_id = new_worker_id(socket.gethostname(), os.getpid())
        self.db = Database(settings.database_url.get_secret_value())
        self.broker = Broker(
            settings.amqp_url.get_secret_value(),
            settings.queue,
            prefetch=settings.prefetch,
            publish_timeout=settings.publish_timeout,
            reconnect_interval=settings.reconnect_interval,
        )
        self.store = DeliveryStore(self.db, self.worker_id)
        self.pool = SmtpPool(settings.smtp)
        self.renderer = Renderer(
            templates_dir=settings.templates_dir,
            message_id_domain=settings.message_id_domain,
            max_size=settings.smtp.max_message_size,
        )
        self.pipeline = Pipeline(
            settings, self.store, self.pool, self.renderer, self.clock, self.bus
        )
        self.scheduler = Scheduler(
            settings, self.store, self.broker, self.clock, self.bus
        )
        self._started = False

    async def start(self) -> None:
        """Upgrade the store, connect, and (unless observing only) start consuming.

        Raises:
            BrokerUnavailable: RabbitMQ did not answer the first connect.
        """
        await self.db.upgrade()
        await self.broker.connect()
        self._started = True
        if not self.consume:
            return
        await self.store.heartbeat(self.clock.now(), socket.gethostname(), os.getpid())
        self.pipeline.start()
        await self.broker.consume(self.pipeline.on_delivery)
        self.scheduler.start()
        self.bus.publish(
            EngineStateChanged(self.clock.now(), "engine", True, "consuming")
        )
        log.info("worker %s consuming %r", self.worker_id, self.settings.queue)

    async def stop(self) -> None:
        """Stop consuming, let sends in flight finish within ``shutdown_grace``, put
        back what was not tried, and close everything in reverse order."""
        if not self._started:
            await self.db.dispose()
            return
        self._started = False
        if self.consume:
            await self.broker.stop_consuming()
            await self.scheduler.stop()
            await self.pipeline.stop(self.settings.shutdown_grace)
            await self.scheduler.publish(self.pipeline.released, "released at shutdown")
            await asyncio.shield(self.store.stopped(self.clock.now()))
        await self.pool.close()
        await self.broker.close()
        await self.db.dispose()
        log.info("worker %s stopped", self.worker_id)

    def ops(self, actor: str) -> Ops:
        """The operations API over this engine's store, broker and event bus."""
        return Ops(
            self.settings,
            db=self.db,
            broker=self.broker,
            bus=self.bus,
            clock=self.clock,
            actor=actor,
            wake_scheduler=self.scheduler.wake,
        )

    async def run_until_idle(self, timeout: float = 30.0, settle: float = 0.2) -> None:
        """Wait until nothing is queued, in flight or due (tests and ``drain``).

        Idle means: the broker has no ready message for us, the pipeline is empty, and
        that held for ``settle`` seconds.

        Raises:
            TimeoutError: still busy after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        quiet_since: float | None = None
        while time.monotonic() < deadline:
            depth = await self.broker.depth()
            busy = not self.pipeline.idle or depth is None or depth.ready > 0
            if busy:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= settle:
                return
            await asyncio.sleep(0.02)
        raise TimeoutError(f"engine still busy after {timeout:g}s")
