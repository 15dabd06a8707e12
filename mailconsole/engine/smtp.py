"""Send pre-built messages to the relay over a pool of reused aiosmtplib connections.

This is the hot path, so a connection is opened lazily (TCP, TLS, EHLO, AUTH once)
and reused for many transactions, and the message bytes are never parsed: the
caller (``render``) builds them once. The transaction is driven command by command
(MAIL, RCPT each, DATA) instead of ``SMTP.sendmail`` so that every failure knows
its stage, and so that the one dangerous moment, the wait for the reply to the
final dot, is told apart: a lost connection or timeout there raises
``SmtpFailure(after_data=True)`` and is never retried here, because the relay may
already own the message.

The bytes go out the way ``aiosmtplib.SMTP.data`` sends them (checked against
aiosmtplib 5.1): every CR, LF or CRLF becomes CRLF, lines starting with a dot are
dot-stuffed, and ``.CRLF`` ends the data, so bare CR/LF cannot smuggle an end of
DATA (CVE-2023-51764). Lines over 998 octets are ``render``'s to prevent.

This module must not classify replies itself (``policy`` does), read settings from
anywhere but the :class:`SmtpSettings` it is given, or ever put the relay password
(or its base64) into an exception or a log record.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass

import aiosmtplib
from aiosmtplib import SMTPResponse

from mailconsole.config import SmtpSettings
from mailconsole.engine import policy
from mailconsole.engine.policy import Outcome, Stage

log = logging.getLogger(__name__)

_LINE_END = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT = re.compile(rb"^\.", re.MULTILINE)
_QUIT_TIMEOUT = 5.0
_MASK = "********"


@dataclass(frozen=True, slots=True)
class RecipientReply:
    """The relay's answer about one recipient."""

    recipient: str
    code: int
    enhanced: str | None
    text: str


@dataclass(frozen=True, slots=True)
class SendOutcome:
    """A message the relay accepted, for some or all of its recipients."""

    accepted: tuple[RecipientReply, ...]
    """Accepted at RCPT and owned by the relay after DATA; ``code``/``text`` are the
    reply to the final dot (250)."""
    refused: tuple[RecipientReply, ...]
    """Refused at RCPT while others were accepted: retry or bounce these alone."""
    data_reply: str
    """The relay's text for the final dot, often with its queue id."""


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


class SmtpFailure(Exception):
    """The whole transaction failed; ``str()`` is one line for the operator.

    Attributes:
        stage: where it failed (see :data:`policy.Stage`).
        code, enhanced: the relay's reply codes, ``None`` when no reply came.
        text: the reply text or a description of the error; never the password.
        outcome: what it means for the message (:class:`policy.Outcome`).
        after_data: the connection was lost or timed out after the final dot and
            before its reply: the message may have been delivered. Retry it with
            the same Message-ID and count a possible duplicate.
        refused: every recipient's refusal when all were refused at RCPT.
    """

    def __init__(
        self,
        stage: Stage,
        text: str,
        *,
        code: int | None = None,
        enhanced: str | None = None,
        outcome: Outcome | None = None,
        after_data: bool = False,
        refused: tuple[RecipientReply, ...] = (),
    ) -> None:
        self.stage: Stage = stage
        self.code = code
        self.enhanced = (
            enhanced if enhanced is not None else policy.parse_enhanced(text)
        )
        self.text = text
        self.outcome = (
            outcome
            if outcome is not None
            else policy.classify(stage, code, self.enhanced, text)
        )
        self.after_data = after_data
        self.refused = refused
        super().__init__(self.reason)

    @property
    def reason(self) -> str:
        """One line an on-call human can act on (see :func:`policy.human_reason`)."""
        return policy.human_reason(
            stage=self.stage,
            code=self.code,
            enhanced=self.enhanced,
            text=self.text,
            after_data=self.after_data,
        )


class _StaleConnection(Exception):
    """A reused connection died before MAIL got a reply: safe to retry elsewhere."""


@dataclass(slots=True, eq=False)
class _Conn:
    client: aiosmtplib.SMTP
    last_used: float
    messages: int = 0
    broken: bool = True
    """Until a transaction ends cleanly we do not know the session's state."""
    smtputf8: bool = False
    eightbitmime: bool = False
    size: bool = False


def wire_format(data: bytes) -> tuple[bytes, int]:
    """The DATA payload (CRLF-only, dot-stuffed, ``.CRLF``-terminated) and its
    RFC 1870 size (the CRLF-normalised message before dot-stuffing)."""
    body = _LINE_END.sub(b"\r\n", data)
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    size = len(body)
    if body.startswith(b".") or b"\n." in body:
        body = _LEADING_DOT.sub(b"..", body)
    return body + b".\r\n", size


def _tls_context(settings: SmtpSettings) -> ssl.SSLContext:
    cafile = str(settings.ca_file) if settings.ca_file else None
    context = ssl.create_default_context(cafile=cafile)
    if not settings.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _ssl_error(exc: BaseException) -> ssl.SSLError | None:
    # aiosmtplib wraps a failed implicit-TLS handshake in SMTPConnectError.
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


class SmtpPool:
    """Up to ``settings.pool_size`` reused connections to the relay.

    Callers beyond the pool size wait for a free connection. A connection is
    retired after ``max_messages`` transactions or ``max_idle`` seconds unused; one
    that the relay closed while idle is replaced without losing the message.
    """

    def __init__(
        self,
        settings: SmtpSettings,
        *,
        max_messages: int = 1000,
        max_idle: float = 60.0,
    ) -> None:
        self._settings = settings
        self._relay = f"{settings.host}:{settings.port}"
        self._max_messages = max_messages
        self._max_idle = max_idle
        self._tls = _tls_context(settings) if settings.tls != "none" else None
        if self._tls is not None and not settings.verify:
            log.warning("TLS certificate verification is OFF for relay %s", self._relay)
        self._slots = asyncio.Semaphore(settings.pool_size)
        self._idle: list[_Conn] = []  # most recently used last: reuse warm ones
        self._busy = 0
        self._retiring: set[asyncio.Task[None]] = set()
        self._helo_name = settings.helo_name
        self._secrets = _secret_forms(settings)
        self._smtputf8: bool | None = None
        self._closed = False
        self._sent = self._failed = self._connects = 0
        self._last_error: str | None = None

    @property
    def smtputf8_available(self) -> bool | None:
        """Whether the relay offers SMTPUTF8; ``None`` until the first connect."""
        return self._smtputf8

    def stats(self) -> PoolStats:
        return PoolStats(
            size=self._settings.pool_size,
            open=len(self._idle) + self._busy,
            idle=len(self._idle),
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
            envelope_from: the MAIL FROM address (may be ``""`` for bounces).
            recipients: RCPT TO addresses; each gets its own reply.
            data: the complete message, headers and body, as rendered.
            smtputf8: the addresses or headers need SMTPUTF8 (RFC 6531).

        Returns:
            The accepted and the (partially) refused recipients.

        Raises:
            SmtpFailure: nothing was delivered, or (``after_data``) we cannot know.
        """
        try:
            outcome = await self._send(envelope_from, recipients, data, smtputf8)
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
                conn = await self._open()
                conn.broken = False
                self._busy += 1
                self._checkin(conn)
        except SmtpFailure as exc:
            self._last_error = exc.reason
            log.warning("relay %s probe failed: %s", self._relay, exc.reason)
            return False
        return True

    async def close(self) -> None:
        """Say QUIT on idle connections; busy ones close when their send ends."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            self._retire(conn)
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)

    # --- the pool -------------------------------------------------------------

    async def _send(
        self, sender: str, recipients: Sequence[str], data: bytes, smtputf8: bool
    ) -> SendOutcome:
        if not recipients:
            raise SmtpFailure("rcpt", "no recipients", outcome=Outcome.PERMANENT)
        if len(data) > self._settings.max_message_size:
            raise SmtpFailure(
                "mail",
                f"message is {len(data)} bytes, over the {self._settings.max_message_size}"
                " byte limit (MAILCONSOLE_SMTP_MAX_MESSAGE_SIZE)",
                outcome=Outcome.PERMANENT,
            )
        payload, size = wire_format(data)
        async with self._slots:
            conn, reused = await self._checkout()
            try:
                args = (sender, recipients, payload, size, smtputf8)
                try:
                    return await self._transact(conn, reused, *args)
                except _StaleConnection:
                    # Nothing of this message reached the relay: a new connection
                    # takes the old one's place (and its busy count).
                    log.info("relay %s closed an idle connection", self._relay)
                    conn.client.close()
                    conn = await self._open()
                    return await self._transact(conn, False, *args)
            finally:
                self._checkin(conn)

    async def _checkout(self) -> tuple[_Conn, bool]:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if conn.client.is_connected and now - conn.last_used <= self._max_idle:
                self._busy += 1
                return conn, True
            self._retire(conn)
        conn = await self._open()
        self._busy += 1
        return conn, False

    def _checkin(self, conn: _Conn) -> None:
        self._busy -= 1
        conn.last_used = time.monotonic()
        keep = not (self._closed or conn.broken or conn.messages >= self._max_messages)
        if keep and conn.client.is_connected:
            self._idle.append(conn)
        elif conn.broken or not conn.client.is_connected:
            conn.client.close()
        else:
            self._retire(conn)

    def _retire(self, conn: _Conn) -> None:
        # QUIT in the background: politeness to the relay must not delay a send.
        task = asyncio.create_task(_quit(conn.client))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _open(self) -> _Conn:
        if self._closed:
            raise SmtpFailure(
                "connect", "the SMTP pool is closed", outcome=Outcome.TRANSIENT
            )
        if self._helo_name is None:
            # aiosmtplib would look this up on every connect; once is enough.
            self._helo_name = await asyncio.to_thread(socket.getfqdn)
        client = aiosmtplib.SMTP(
            hostname=self._settings.host,
            port=self._settings.port,
            local_hostname=self._helo_name,
            timeout=self._settings.timeout,
            use_tls=self._settings.tls == "tls",
            start_tls=False,  # done by hand below, so a missing offer is an error
            tls_context=self._tls,
        )
        try:
            await self._handshake(client)
        except BaseException:
            client.close()
            raise
        self._connects += 1
        conn = _Conn(client=client, last_used=time.monotonic())
        conn.smtputf8 = client.supports_extension("smtputf8")
        conn.eightbitmime = client.supports_extension("8bitmime")
        conn.size = client.supports_extension("size")
        self._smtputf8 = conn.smtputf8
        log.info("connected to relay %s (tls=%s)", self._relay, self._settings.tls)
        return conn

    async def _handshake(self, client: aiosmtplib.SMTP) -> None:
        stage: Stage = "connect"
        try:
            await client.connect()
            await _ehlo(client)
            if self._settings.tls == "starttls":
                stage = "tls"
                if not client.supports_extension("starttls"):
                    raise SmtpFailure(
                        "tls",
                        f"{self._relay} does not offer STARTTLS, which "
                        "MAILCONSOLE_SMTP_TLS=starttls requires; nothing was sent",
                        outcome=Outcome.CONFIG,
                    )
                await client.starttls(server_hostname=self._settings.host)
                await _ehlo(client)
            if self._settings.username is not None:
                stage = "auth"
                await self._login(client, self._settings.username)
        except SmtpFailure:
            raise
        except (aiosmtplib.SMTPException, OSError, ValueError) as exc:
            raise self._failure(stage, exc) from exc

    async def _login(self, client: aiosmtplib.SMTP, username: str) -> None:
        if not client.supports_extension("auth"):
            raise SmtpFailure(
                "auth",
                f"{self._relay} does not offer AUTH, but MAILCONSOLE_SMTP_USERNAME is set",
                outcome=Outcome.CONFIG,
            )
        secret = self._settings.password
        password = secret.get_secret_value() if secret is not None else ""
        await client.login(username, password)

    # --- one transaction --------------------------------------------------------

    async def _transact(
        self,
        conn: _Conn,
        reused: bool,
        sender: str,
        recipients: Sequence[str],
        payload: bytes,
        size: int,
        smtputf8: bool,
    ) -> SendOutcome:
        conn.broken = True  # until this transaction ends in a known state
        if smtputf8 and not conn.smtputf8:
            conn.broken = False
            raise SmtpFailure(
                "mail", "relay does not support SMTPUTF8", outcome=Outcome.PERMANENT
            )
        await self._mail(conn, reused, sender, payload, size, smtputf8)
        accepted, refused = await self._rcpts(conn, recipients, smtputf8)
        if not accepted:
            await self._reset(conn)
            best = refused[policy.most_hopeful([_outcome(r) for r in refused])]
            raise SmtpFailure(
                "rcpt",
                best.text,
                code=best.code,
                enhanced=best.enhanced,
                refused=tuple(refused),
            )
        final = await self._data(conn, payload)
        conn.messages += 1
        conn.broken = False
        enhanced = policy.parse_enhanced(final.message)
        return SendOutcome(
            accepted=tuple(
                RecipientReply(r, final.code, enhanced, final.message) for r in accepted
            ),
            refused=tuple(refused),
            data_reply=final.message,
        )

    async def _mail(
        self,
        conn: _Conn,
        reused: bool,
        sender: str,
        payload: bytes,
        size: int,
        utf8: bool,
    ) -> None:
        options = [f"SIZE={size}"] if conn.size else []
        if conn.eightbitmime and not payload.isascii():
            options.append("BODY=8BITMIME")
        if utf8:
            options.append("SMTPUTF8")
        encoding = "utf-8" if utf8 else "ascii"
        try:
            await conn.client.mail(sender, options=options, encoding=encoding)
        except aiosmtplib.SMTPSenderRefused as exc:
            if reused and exc.code == 421:
                raise _StaleConnection from exc
            # A refused MAIL opens no transaction: the session is still clean.
            conn.broken = not conn.client.is_connected
            raise self._failure("mail", exc) from exc
        except aiosmtplib.SMTPServerDisconnected as exc:
            if reused:
                raise _StaleConnection from exc
            raise self._failure("mail", exc) from exc
        except ValueError as exc:  # refused locally, before anything was written
            conn.broken = False
            raise self._failure("mail", exc) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise self._failure("mail", exc) from exc

    async def _rcpts(
        self, conn: _Conn, recipients: Sequence[str], utf8: bool
    ) -> tuple[list[str], list[RecipientReply]]:
        accepted: list[str] = []
        refused: list[RecipientReply] = []
        encoding = "utf-8" if utf8 else "ascii"
        for recipient in recipients:
            try:
                await conn.client.rcpt(recipient, encoding=encoding)
            except aiosmtplib.SMTPRecipientRefused as exc:
                if exc.code == 421:  # the relay is hanging up: no point going on
                    raise self._failure("rcpt", exc) from exc
                enhanced = policy.parse_enhanced(exc.message)
                refused.append(
                    RecipientReply(recipient, exc.code, enhanced, exc.message)
                )
            except ValueError as exc:
                # An address we refuse to put on the wire (control characters,
                # non-ASCII without SMTPUTF8): refused locally, as a relay would.
                text = f"5.1.3 not sent, refused locally: {exc}"
                refused.append(RecipientReply(recipient, 553, "5.1.3", text))
            except (aiosmtplib.SMTPException, OSError) as exc:
                raise self._failure("rcpt", exc) from exc
            else:
                accepted.append(recipient)
        return accepted, refused

    async def _data(self, conn: _Conn, payload: bytes) -> SMTPResponse:
        client = conn.client
        try:
            start = await client.execute_command(b"DATA")
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise self._failure("data", exc) from exc
        if start.code != 354:
            await self._reset(conn)
            raise self._reply_failure("data", start)
        protocol = client.protocol
        if protocol is None:
            raise self._failure("data", aiosmtplib.SMTPServerDisconnected("lost"))
        try:
            protocol.write(payload)
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise self._failure("data", exc) from exc
        try:
            # Not client.data(): its one timeout covers both the 354 and this
            # reply, and this one needs the long data_timeout (RFC 5321 §4.5.3.2.6).
            final = await protocol.read_response(timeout=self._settings.data_timeout)
        except (aiosmtplib.SMTPException, OSError) as exc:
            client.close()
            raise self._failure("data", exc, after_data=True) from exc
        if final.code != 250:
            if final.code == 421:
                client.close()
            conn.broken = not client.is_connected  # the transaction is over either way
            raise self._reply_failure("data", final)
        return final

    async def _reset(self, conn: _Conn) -> None:
        # After a refusal the relay may still hold our MAIL FROM: clear it so the
        # connection can carry the next message, or drop the connection.
        if not conn.client.is_connected:
            return
        try:
            await conn.client.rset()
        except (aiosmtplib.SMTPException, OSError):
            conn.client.close()
        else:
            conn.broken = False

    # --- errors ---------------------------------------------------------------

    def _reply_failure(self, stage: Stage, reply: SMTPResponse) -> SmtpFailure:
        text = self._scrub(reply.message)
        return SmtpFailure(stage, text, code=reply.code)

    def _failure(
        self, stage: Stage, exc: BaseException, *, after_data: bool = False
    ) -> SmtpFailure:
        if isinstance(exc, aiosmtplib.SMTPResponseException) and exc.code >= 400:
            return self._reply_failure(stage, SMTPResponse(exc.code, exc.message))
        tls_error = _ssl_error(exc)
        if tls_error is not None:
            return SmtpFailure("tls", self._tls_text(tls_error), outcome=Outcome.CONFIG)
        text, outcome = self._describe(stage, exc)
        return SmtpFailure(
            stage, self._scrub(text), outcome=outcome, after_data=after_data
        )

    def _describe(self, stage: Stage, exc: BaseException) -> tuple[str, Outcome | None]:
        """Text for a failure without a reply; ``None`` lets policy classify it."""
        relay, cause = self._relay, exc.__cause__
        if isinstance(exc, TimeoutError):  # aiosmtplib's timeouts subclass it
            waited = self._settings.timeout
            if stage == "data" and isinstance(exc, aiosmtplib.SMTPReadTimeoutError):
                waited = self._settings.data_timeout
            return f"no answer from {relay} within {waited:g} s ({exc})", None
        if isinstance(cause, ConnectionRefusedError):
            return f"connection refused to {relay}", None
        if isinstance(cause, socket.gaierror):
            return f"cannot resolve {self._settings.host}: {cause.strerror}", None
        if isinstance(cause, aiosmtplib.SMTPServerDisconnected):
            return f"{relay} closed the connection before its greeting", None
        if isinstance(exc, aiosmtplib.SMTPConnectError) and isinstance(cause, OSError):
            return f"cannot connect to {relay}: {cause}", None
        if isinstance(exc, ConnectionError):
            return f"{relay} closed the connection during {stage} ({exc})", None
        if isinstance(exc, ValueError):
            if stage in ("mail", "rcpt"):
                return f"address not sendable: {exc}", Outcome.PERMANENT
            return f"bad SMTP setting: {exc}", Outcome.CONFIG
        if stage in ("connect", "tls", "auth"):
            return f"{relay}: {exc}", Outcome.CONFIG
        return f"{relay}: {type(exc).__name__}: {exc}", None

    def _tls_text(self, exc: ssl.SSLError) -> str:
        if isinstance(exc, ssl.SSLCertVerificationError):
            why = exc.verify_message or str(exc)
            return f"TLS certificate of {self._relay} not trusted: {why}"
        return f"TLS handshake with {self._relay} failed: {exc.reason or exc}"

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, _MASK)
        return text


def _log_level(exc: SmtpFailure) -> int:
    # Configuration and connection trouble concern the operator; a refused message
    # is the caller's to log, with its id.
    if exc.outcome is Outcome.CONFIG:
        return logging.ERROR
    return logging.WARNING if exc.code is None else logging.DEBUG


def _outcome(reply: RecipientReply) -> Outcome:
    return policy.classify("rcpt", reply.code, reply.enhanced, reply.text)


def _secret_forms(settings: SmtpSettings) -> tuple[str, ...]:
    """The password as it could appear in a reply echoed back: plain, base64 (AUTH
    LOGIN) and the base64 AUTH PLAIN token."""
    if settings.password is None or not settings.password.get_secret_value():
        return ()
    password = settings.password.get_secret_value()
    user = settings.username or ""
    plain = f"\0{user}\0{password}".encode()
    forms = {
        password,
        base64.b64encode(password.encode()).decode(),
        base64.b64encode(plain).decode(),
    }
    return tuple(sorted(forms, key=len, reverse=True))


async def _ehlo(client: aiosmtplib.SMTP) -> None:
    try:
        await client.ehlo()
    except aiosmtplib.SMTPHeloError:
        if not client.is_connected:
            raise
        await client.helo()  # an RFC 821 relay: no extensions, but it can carry mail


async def _quit(client: aiosmtplib.SMTP) -> None:
    try:
        if client.is_connected:
            await client.quit(timeout=_QUIT_TIMEOUT)
    except (aiosmtplib.SMTPException, OSError):
        pass
    finally:
        client.close()
