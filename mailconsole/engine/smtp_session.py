"""One SMTP session with the relay: opened once (TCP, TLS, EHLO, AUTH), then many
mail transactions. The pool in ``smtp`` owns these; nothing else should.

The transaction is driven command by command (MAIL, RCPT each, DATA) instead of
``SMTP.sendmail`` so that every failure knows its stage, and so that the one
dangerous moment, the wait for the reply to the final dot, is told apart: a lost
connection or timeout there raises ``SmtpFailure(after_data=True)``, never retried
here, because the relay may already own the message.

The bytes go out the way ``aiosmtplib.SMTP.data`` sends them (checked against
aiosmtplib 5.1): every CR, LF or CRLF becomes CRLF, lines starting with a dot are
dot-stuffed, and ``.CRLF`` ends the data, so bare CR/LF cannot smuggle an end of
DATA (CVE-2023-51764). Lines over 998 octets are ``render``'s to prevent.

This module must not parse the message, retry anything (the pool decides), or
pass the password anywhere but to ``SMTP.login``.
"""

from __future__ import annotations

import functools
import re
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass

import aiosmtplib
from aiosmtplib import SMTPResponse
from aiosmtplib.email import parse_address

from mailconsole.config import SmtpSettings
from mailconsole.engine import policy
from mailconsole.engine.policy import Outcome, Stage
from mailconsole.engine.smtp_errors import FailureText, RecipientReply, SmtpFailure

_LINE_END = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT = re.compile(rb"^\.", re.MULTILINE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_QUIT_TIMEOUT = 5.0
_ERRORS = (aiosmtplib.SMTPException, OSError)  # OSError covers TimeoutError and ssl


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
class Message:
    """A message ready for the wire (see :func:`wire_format`)."""

    sender: str
    recipients: Sequence[str]
    payload: bytes
    size: int
    smtputf8: bool


class StaleConnection(Exception):
    """A reused session died before MAIL got a reply: nothing of the message was
    accepted, so it is safe to send it on a new connection."""


def wire_format(data: bytes) -> tuple[bytes, int]:
    """The DATA payload (CRLF-only, dot-stuffed, ``.CRLF``-terminated) and its
    RFC 1870 size (the CRLF-normalised message before dot-stuffing)."""
    crlf = data.count(b"\r\n")
    # Already CRLF-only, as ``render`` makes it: skip the copy.
    clean = data.count(b"\n") == crlf == data.count(b"\r")
    body = data if clean else _LINE_END.sub(b"\r\n", data)
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    size = len(body)
    if body.startswith(b".") or b"\n." in body:
        body = _LEADING_DOT.sub(b"..", body)
    return body + b".\r\n", size


@functools.lru_cache(maxsize=4096)  # the same senders, again and again
def unsendable(address: str) -> str | None:
    """Why an envelope address cannot go out as given, or ``None``.

    aiosmtplib passes addresses through ``email.utils.parseaddr``, which quietly
    rewrites ``"x\\r\\nRCPT TO:<y@evil>"`` or ``"a@b, c@d"`` into another address:
    refuse anything that is not already the bare address it would send.
    """
    if _CONTROL.search(address):
        return "control characters"
    try:
        parsed = parse_address(address)
    except ValueError as exc:
        return str(exc)
    return None if parsed == address else f"it would be sent as {parsed!r}"


class Session:
    """A connected, greeted, (TLS-upgraded, authenticated) session with the relay."""

    def __init__(
        self, client: aiosmtplib.SMTP, errors: FailureText, data_timeout: float
    ):
        self.client = client
        self.last_used = time.monotonic()
        self.messages = 0
        """Transactions completed on this session."""
        self.broken = False
        """True while a transaction is unfinished or ended in an unknown state."""
        self._errors = errors
        self._data_timeout = data_timeout

    @classmethod
    async def open(
        cls,
        settings: SmtpSettings,
        *,
        tls: ssl.SSLContext | None,
        helo_name: str,
        errors: FailureText,
    ) -> Session:
        """Connect, upgrade and log in as ``settings`` say.

        Raises:
            SmtpFailure: stage ``connect``, ``tls`` or ``auth``.
        """
        client = aiosmtplib.SMTP(
            hostname=settings.host,
            port=settings.port,
            local_hostname=helo_name,
            timeout=settings.timeout,
            use_tls=settings.tls == "tls",
            start_tls=False,  # done by hand, so a relay not offering it is an error
            tls_context=tls,
        )
        try:
            await _handshake(client, settings, errors)
        except BaseException:
            client.close()
            raise
        return cls(client, errors, settings.data_timeout)

    @property
    def is_open(self) -> bool:
        return self.client.is_connected

    @property
    def smtputf8(self) -> bool:
        return self.client.supports_extension("smtputf8")

    def close(self) -> None:
        self.client.close()

    async def quit(self) -> None:
        """Say goodbye politely, ignoring a relay that no longer listens."""
        try:
            if self.client.is_connected:
                await self.client.quit(timeout=_QUIT_TIMEOUT)
        except _ERRORS:
            pass
        finally:
            self.client.close()

    async def transact(self, msg: Message, *, reused: bool) -> SendOutcome:
        """One mail transaction.

        Raises:
            StaleConnection: ``reused`` and the relay had hung up before MAIL.
            SmtpFailure: the transaction failed; ``broken`` says whether the
                session can carry another one.
        """
        self.broken = True  # until this transaction ends in a known state
        if msg.smtputf8 and not self.smtputf8:
            self.broken = False
            text = "relay does not support SMTPUTF8"
            raise SmtpFailure("mail", text, outcome=Outcome.PERMANENT)
        await self._mail(msg, reused)
        accepted, refused = await self._rcpts(msg)
        if not accepted:
            await self._reset()
            best = refused[policy.most_hopeful([r.outcome for r in refused])]
            raise SmtpFailure(
                "rcpt",
                best.text,
                code=best.code,
                enhanced=best.enhanced,
                refused=tuple(refused),
            )
        final = await self._data(msg.payload)
        self.messages += 1
        self.broken = False
        enhanced = policy.parse_enhanced(final.message)
        return SendOutcome(
            accepted=tuple(
                RecipientReply(r, final.code, enhanced, final.message) for r in accepted
            ),
            refused=tuple(refused),
            data_reply=final.message,
        )

    async def _mail(self, msg: Message, reused: bool) -> None:
        client = self.client
        options = [f"SIZE={msg.size}"] if client.supports_extension("size") else []
        if not msg.payload.isascii() and client.supports_extension("8bitmime"):
            options.append("BODY=8BITMIME")
        if msg.smtputf8:
            options.append("SMTPUTF8")
        encoding = "utf-8" if msg.smtputf8 else "ascii"
        try:
            await client.mail(msg.sender, options=options, encoding=encoding)
        except aiosmtplib.SMTPSenderRefused as exc:
            if reused and exc.code == 421:
                raise StaleConnection from exc
            # A refused MAIL opens no transaction: the session is still clean.
            self.broken = not client.is_connected
            raise self._errors.of("mail", exc) from exc
        except aiosmtplib.SMTPServerDisconnected as exc:
            if reused:
                raise StaleConnection from exc
            raise self._errors.of("mail", exc) from exc
        except ValueError as exc:  # refused locally, before anything was written
            self.broken = False
            raise self._errors.of("mail", exc) from exc
        except _ERRORS as exc:
            raise self._errors.of("mail", exc) from exc

    async def _rcpts(self, msg: Message) -> tuple[list[str], list[RecipientReply]]:
        accepted: list[str] = []
        refused: list[RecipientReply] = []
        encoding = "utf-8" if msg.smtputf8 else "ascii"
        for recipient in msg.recipients:
            if (why := unsendable(recipient)) is not None:
                text = f"5.1.3 not sent, refused locally: {why}"
                refused.append(RecipientReply(recipient, 553, "5.1.3", text))
                continue
            try:
                await self.client.rcpt(recipient, encoding=encoding)
            except aiosmtplib.SMTPRecipientRefused as exc:
                if exc.code == 421:  # the relay is hanging up: no point going on
                    raise self._errors.of("rcpt", exc) from exc
                text = self._errors.scrub(exc.message)
                enhanced = policy.parse_enhanced(text)
                refused.append(RecipientReply(recipient, exc.code, enhanced, text))
            except ValueError as exc:  # non-ASCII without SMTPUTF8
                text = f"5.1.3 not sent, refused locally: {exc}"
                refused.append(RecipientReply(recipient, 553, "5.1.3", text))
            except _ERRORS as exc:
                raise self._errors.of("rcpt", exc) from exc
            else:
                accepted.append(recipient)
        return accepted, refused

    async def _data(self, payload: bytes) -> SMTPResponse:
        client = self.client
        try:
            start = await client.execute_command(b"DATA")
            if start.code != 354:
                await self._reset()
                raise self._errors.reply("data", start.code, start.message)
            protocol = client.protocol
            if protocol is None:
                raise aiosmtplib.SMTPServerDisconnected("connection lost")
            protocol.write(payload)
        except _ERRORS as exc:
            raise self._errors.of("data", exc) from exc
        try:
            # Not client.data(): its one timeout covers both the 354 and this
            # reply, and this one needs the long data_timeout (RFC 5321 §4.5.3.2.6).
            final = await protocol.read_response(timeout=self._data_timeout)
        except _ERRORS as exc:
            client.close()
            raise self._errors.of("data", exc, after_data=True) from exc
        if final.code != 250:
            if final.code == 421:
                client.close()
            self.broken = not client.is_connected  # the transaction is over anyway
            raise self._errors.reply("data", final.code, final.message)
        return final

    async def _reset(self) -> None:
        # After a refusal the relay may still hold our MAIL FROM: clear it so the
        # session can carry the next message, or drop the connection.
        if not self.client.is_connected:
            return
        try:
            await self.client.rset()
        except _ERRORS:
            self.client.close()
        else:
            self.broken = False


async def _handshake(
    client: aiosmtplib.SMTP, settings: SmtpSettings, errors: FailureText
) -> None:
    stage: Stage = "connect"
    try:
        await client.connect()
        await _ehlo(client)
        if settings.tls == "starttls":
            stage = "tls"
            if not client.supports_extension("starttls"):
                raise _unsupported(errors, "tls", "STARTTLS", "TLS=starttls")
            await client.starttls(server_hostname=settings.host)
            await _ehlo(client)
        if settings.username is not None:
            stage = "auth"
            if not client.supports_extension("auth"):
                raise _unsupported(errors, "auth", "AUTH", "USERNAME")
            secret = settings.password
            password = secret.get_secret_value() if secret is not None else ""
            await client.login(settings.username, password)
    except SmtpFailure:
        raise
    except (*_ERRORS, ValueError) as exc:
        raise errors.of(stage, exc) from exc


def _unsupported(
    errors: FailureText, stage: Stage, extension: str, setting: str
) -> SmtpFailure:
    text = (
        f"{errors.relay} does not offer {extension}, which "
        f"MAILCONSOLE_SMTP_{setting} requires; no message was sent"
    )
    return SmtpFailure(stage, text, outcome=Outcome.CONFIG)


async def _ehlo(client: aiosmtplib.SMTP) -> None:
    try:
        await client.ehlo()
    except aiosmtplib.SMTPHeloError:
        if not client.is_connected:
            raise
        await client.helo()  # an RFC 821 relay: no extensions, but it can carry mail
