"""RabbitMQ: one robust connection, a consuming channel and a confirming publisher.

Declares the queue exactly as the .NET producers do (durable, no arguments) so both
sides can declare it. Every publish waits for the broker's confirm under a timeout
(aio-pika can hang on a dead robust channel); a failed ack is logged and left to the
broker's redelivery, which the store deduplicates. Must not know about mail.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from mailconsole.config import mask_url
from mailconsole.engine.errors import BrokerUnavailable, PublishFailed

log = logging.getLogger(__name__)

Handler = Callable[[AbstractIncomingMessage], Awaitable[None]]
REF_HEADER = "x-mailconsole-id"
"""Set on a message re-published from the store: the body is informational, the row
named by this header is the truth."""


@dataclass(frozen=True, slots=True)
class QueueDepth:
    ready: int
    consumers: int


class Broker:
    """The engine's link to RabbitMQ."""

    def __init__(
        self,
        url: str,
        queue: str,
        *,
        prefetch: int = 200,
        publish_timeout: float = 10.0,
        connect_timeout: float = 10.0,
        reconnect_interval: float = 5.0,
    ) -> None:
        self._url = url
        self.queue_name = queue
        self._prefetch = prefetch
        self._publish_timeout = publish_timeout
        self._connect_timeout = connect_timeout
        self._reconnect_interval = reconnect_interval
        self._connection: AbstractRobustConnection | None = None
        self._consume_channel: AbstractChannel | None = None
        self._publish_channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None
        self._handler: Handler | None = None

    async def connect(self) -> None:
        """Connect and declare the queue.

        Raises:
            BrokerUnavailable: the broker did not answer; later drops reconnect by themselves.
        """
        try:
            self._connection = await asyncio.wait_for(
                aio_pika.connect_robust(
                    self._url,
                    timeout=self._connect_timeout,
                    reconnect_interval=self._reconnect_interval,
                ),
                self._connect_timeout + 1,
            )
            self._publish_channel = await self._connection.channel(
                publisher_confirms=True, on_return_raises=True
            )
            await self._publish_channel.declare_queue(self.queue_name, durable=True)
        except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as exc:
            await self.close()
            raise BrokerUnavailable(
                f"RabbitMQ is not reachable at {mask_url(self._url)}: {exc or type(exc).__name__}"
                " (start it with `rabbitmq-server -detached`, or set MAILCONSOLE_AMQP_URL)"
            ) from None

    @property
    def connected(self) -> bool:
        return self._connection is not None and not self._connection.is_closed

    async def publish(
        self,
        body: bytes,
        *,
        message_id: str | None = None,
        headers: Mapping[str, Any] | None = None,
    ) -> None:
        """Publish one persistent message and wait for the broker's confirm.

        Raises:
            PublishFailed: no confirm within the publish timeout, or the broker refused it.
        """
        if self._publish_channel is None:
            raise PublishFailed("not connected to RabbitMQ")
        message = aio_pika.Message(
            body,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            content_type="application/json",
            message_id=message_id,
            headers=dict(headers or {}),
        )
        try:
            await asyncio.wait_for(
                self._publish_channel.default_exchange.publish(
                    message, routing_key=self.queue_name
                ),
                self._publish_timeout,
            )
        except TimeoutError:
            raise PublishFailed(
                f"RabbitMQ did not confirm a publish within {self._publish_timeout:g}s"
            ) from None
        except (aio_pika.exceptions.AMQPError, OSError, RuntimeError) as exc:
            raise PublishFailed(f"publish to RabbitMQ failed: {exc}") from None

    async def publish_ref(self, message_id: str) -> None:
        """Put a stored message back on the queue by reference."""
        await self.publish(
            b'{"mailconsole_ref":"' + message_id.encode() + b'"}',
            message_id=message_id,
            headers={REF_HEADER: message_id},
        )

    async def consume(self, handler: Handler) -> None:
        """Start delivering messages to ``handler`` (manual acks, prefetch window)."""
        assert self._connection is not None
        self._handler = handler
        self._consume_channel = await self._connection.channel(publisher_confirms=False)
        await self._consume_channel.set_qos(prefetch_count=self._prefetch)
        self._queue = await self._consume_channel.declare_queue(
            self.queue_name, durable=True
        )
        self._consumer_tag = await self._queue.consume(handler, no_ack=False)

    async def stop_consuming(self) -> None:
        """Ask the broker for no more deliveries; unacked ones stay ours until closed."""
        if self._queue is not None and self._consumer_tag is not None:
            try:
                await asyncio.wait_for(self._queue.cancel(self._consumer_tag), 5)
            except Exception as exc:  # a dead channel has no consumer left to cancel
                log.debug("cancel consumer: %s", exc)
        self._consumer_tag = None

    async def ensure_consuming(self, *, starved: bool) -> bool:
        """The watchdog: re-register the consumer if the broker no longer has it.

        aio-pika can report a healthy robust connection whose consumer was not restored
        after a reconnect. The broker's ``consumer_count`` leaves out consumers whose
        prefetch window is full, so it proves a loss only when this worker holds no
        delivery and has received none for a while (``starved``) although messages
        wait. Returns whether a repair was made.
        """
        if self._handler is None or self._consumer_tag is None or not self.connected:
            return False
        channel_dead = self._consume_channel is None or self._consume_channel.is_closed
        if not channel_dead:
            depth = await self.depth()
            if not starved or depth is None or depth.consumers > 0 or depth.ready == 0:
                return False
        log.warning("consumer on %r lost; registering it again", self.queue_name)
        old, self._consume_channel = self._consume_channel, None
        if old is not None and not old.is_closed:
            try:
                await asyncio.wait_for(old.close(), 5)
            except Exception as exc:
                log.debug("closing the old consumer channel: %s", exc)
        await self.consume(self._handler)
        return True

    async def depth(self) -> QueueDepth | None:
        """Ready messages and consumers of the queue, or ``None`` when unreachable."""
        if self._publish_channel is None or self._publish_channel.is_closed:
            return None
        try:
            # The raw channel: aio-pika's robust channel answers a passive declare of
            # a queue it declared before from its cache, with the counts of then.
            channel = await self._publish_channel.get_underlay_channel()
            result = await asyncio.wait_for(
                channel.queue_declare(self.queue_name, passive=True), 5
            )
        except Exception as exc:
            log.debug("queue depth: %s", exc)
            return None
        return QueueDepth(result.message_count or 0, result.consumer_count or 0)

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        self._publish_channel = self._consume_channel = self._queue = None
        if connection is not None:
            try:
                await asyncio.wait_for(connection.close(), 5)
            except Exception as exc:
                log.debug("close: %s", exc)


async def ack(message: AbstractIncomingMessage, *, multiple: bool = False) -> bool:
    """Ack; a failure means the channel died and the broker will redeliver."""
    try:
        await asyncio.wait_for(message.ack(multiple=multiple), 5)
        return True
    except Exception as exc:
        log.warning(
            "ack failed (%s); the broker will redeliver, the store deduplicates", exc
        )
        return False


async def nack(message: AbstractIncomingMessage) -> None:
    try:
        await asyncio.wait_for(message.nack(requeue=True), 5)
    except Exception as exc:
        log.debug("nack failed (%s); the broker redelivers on close", exc)
