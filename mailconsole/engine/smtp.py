"""Send pre-built messages to the relay over a pool of reused SMTP connections.

This is the hot path (hundreds of messages a second), so sessions are opened lazily
(TCP, TLS, EHLO, AUTH once each) and reused for many transactions, and the message
bytes are never parsed: ``render`` builds them once. A session the relay closed
while idle is replaced without losing the message; nothing is ever retried after
the final dot was sent (``SmtpFailure.after_data``). See ``smtp_session`` for the
transaction and ``smtp_errors`` for how failures are described.

This module must not classify replies itself (``policy`` does), read settings from
anywhere but the :class:`SmtpSettings` it is given, or put the relay password (or
its base64) into an exception or a log record.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass

from mailconsole.config import SmtpSettings
from mailconsole.engine.policy import Outcome
from mailconsole.engine.smtp_errors import FailureText, RecipientReply, SmtpFailure
from mailconsole.engine.smtp_session import (
    Message,
    SendOutcome,
    Session,
    StaleConnection,
    unsendable,
    wire_format,
)

__all__ = [
    "PoolStats",
    "RecipientReply",
    "SendOutcome",
    "SmtpFailure",
    "SmtpPool",
    "wire_format",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PoolStats:
    """A snapshot of the pool for the console and ``stats``."""

    size: int
    open: int
    idle: int
    busy: int
    sent: int
    failed: int
    connects: int
    """Connections opened successfully since the pool was created."""
    last_error: str | None


class SmtpPool:
    """Up to ``settings.pool_size`` reused connections to the relay.

    Callers beyond the pool size wait for a free connection. A connection is
    retired (QUIT) after ``max_messages`` transactions or ``max_idle`` seconds
    unused, and dropped after any transaction that ended in an unknown state.
    """

    def __init__(
        self,
        settings: SmtpSettings,
        *,
        max_messages: int = 1000,
        max_idle: float = 60.0,
    ) -> None:
        self._settings = settings
        self._errors = FailureText(settings)
        self._relay = self._errors.relay
        self._max_messages = max_messages
        self._max_idle = max_idle
        self._tls = _tls_context(settings) if settings.tls != "none" else None
        if self._tls is not None and not settings.verify:
            log.warning("TLS certificate verification is OFF for relay %s", self._relay)
        self._slots = asyncio.Semaphore(settings.pool_size)
        self._idle: list[Session] = []  # most recently used last: reuse warm ones
        self._busy = 0
        self._retiring: set[asyncio.Task[None]] = set()
        self._helo_name = settings.helo_name
        self._smtputf8: bool | None = None
        self._closed = False
        self._sent = self._failed = self._connects = 0
        self._last_error: str | None = None

    @property
    def smtputf8_available(self) -> bool | None:
        """Whether the relay offers SMTPUTF8; ``None`` until the first connect."""
        return self._smtputf8

    def stats(self) -> PoolStats:
        idle = len(self._idle)
        return PoolStats(
            size=self._settings.pool_size,
            open=idle + self._busy,
            idle=idle,
            busy=self._busy,
            sent=self._sent,
            failed=self._failed,
            connects=self._connects,
            last_error=self._last_error,
        )

    async def send(
        self,
        envelope_from: str,
        recipients: Sequence[str],
        data: bytes,
        *,
        smtputf8: bool = False,
    ) -> SendOutcome:
        """Send one message in one SMTP transaction.

        Args:
            envelope_from: the MAIL FROM address (``""`` for a null sender).
            recipients: bare RCPT TO addresses; each gets its own reply.
            data: the complete message, headers and body, as rendered.
            smtputf8: the addresses or headers need SMTPUTF8 (RFC 6531).

        Returns:
            The accepted and the (partially) refused recipients.

        Raises:
            SmtpFailure: nothing was delivered, or (``after_data``) we cannot know.
        """
        try:
            message = self._prepare(envelope_from, recipients, data, smtputf8)
            outcome = await self._send(message)
        except SmtpFailure as exc:
            self._failed += 1
            self._last_error = exc.reason
            log.log(_log_level(exc), "send to relay %s failed: %s", self._relay, exc)
            raise
        self._sent += 1
        return outcome

    async def probe(self) -> bool:
        """Open a fresh connection (TLS and AUTH included) and keep it in the pool.

        Returns ``False`` when that fails; ``stats().last_error`` says why.
        """
        try:
            async with self._slots:
                session = await self._open()
                self._busy += 1
                self._checkin(session)
        except SmtpFailure as exc:
            self._last_error = exc.reason
            log.warning("relay %s probe failed: %s", self._relay, exc.reason)
            return False
        return True

    async def close(self) -> None:
        """Say QUIT on idle connections; busy ones close when their send ends."""
        self._closed = True
        idle, self._idle = self._idle, []
        for session in idle:
            self._retire(session)
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)

    def _prepare(
        self, sender: str, recipients: Sequence[str], data: bytes, smtputf8: bool
    ) -> Message:
        if not recipients:
            raise SmtpFailure("rcpt", "no recipients", outcome=Outcome.PERMANENT)
        limit = self._settings.max_message_size
        if len(data) > limit:
            text = f"message is {len(data)} bytes, over the {limit} byte limit"
            raise SmtpFailure("mail", text, outcome=Outcome.PERMANENT)
        if (why := unsendable(sender)) is not None:
            text = f"sender address {sender!r} not sendable: {why}"
            raise SmtpFailure("mail", text, outcome=Outcome.PERMANENT)
        payload, size = wire_format(data)
        return Message(sender, recipients, payload, size, smtputf8)

    async def _send(self, message: Message) -> SendOutcome:
        async with self._slots:
            session, reused = await self._checkout()
            try:
                try:
                    return await session.transact(message, reused=reused)
                except StaleConnection:
                    # Nothing of this message reached the relay: a new connection
                    # takes the old one's place (and its busy count).
                    log.info("relay %s closed an idle connection", self._relay)
                    session.close()
                    session = await self._open()
                    return await session.transact(message, reused=False)
            finally:
                self._checkin(session)

    async def _checkout(self) -> tuple[Session, bool]:
        now = time.monotonic()
        while self._idle:
            session = self._idle.pop()
            if session.is_open and now - session.last_used <= self._max_idle:
                self._busy += 1
                return session, True
            self._retire(session)
        session = await self._open()
        self._busy += 1
        return session, False

    def _checkin(self, session: Session) -> None:
        # Runs on every exit, cancellation included: a transaction cut short
        # leaves ``broken`` set, and such a session is never reused.
        self._busy -= 1
        session.last_used = time.monotonic()
        if session.broken or not session.is_open:
            session.close()
        elif self._closed or session.messages >= self._max_messages:
            self._retire(session)
        else:
            self._idle.append(session)

    def _retire(self, session: Session) -> None:
        # QUIT in the background: politeness to the relay must not delay a send.
        task = asyncio.create_task(session.quit())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _open(self) -> Session:
        if self._closed:
            text = "the pool is closed"
            raise SmtpFailure("connect", text, outcome=Outcome.TRANSIENT)
        if self._helo_name is None:
            # aiosmtplib would look this up on every connect; once is enough.
            self._helo_name = await asyncio.to_thread(socket.getfqdn)
        session = await Session.open(
            self._settings,
            tls=self._tls,
            helo_name=self._helo_name,
            errors=self._errors,
        )
        self._connects += 1
        self._smtputf8 = session.smtputf8
        log.info("connected to relay %s (tls=%s)", self._relay, self._settings.tls)
        return session


def _tls_context(settings: SmtpSettings) -> ssl.SSLContext:
    cafile = str(settings.ca_file) if settings.ca_file else None
    context = ssl.create_default_context(cafile=cafile)
    if not settings.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _log_level(exc: SmtpFailure) -> int:
    # Configuration and connection trouble concern the operator; a refused message
    # is the caller's to log, with its id.
    if exc.outcome is Outcome.CONFIG:
        return logging.ERROR
    return logging.WARNING if exc.code is None else logging.DEBUG
