"""How a failed SMTP exchange is described: :class:`SmtpFailure` and its translation
from aiosmtplib, socket and TLS exceptions.

Split out of ``smtp`` (which re-exports the public names) to keep the pool readable.
It must not decide whether a failure is transient or permanent beyond the few cases
only the exception type reveals (``policy.classify`` does the rest), and it must
never let the relay password, or its base64 forms, into any text it produces.
"""

from __future__ import annotations

import base64
import socket
import ssl
from dataclasses import dataclass

import aiosmtplib

from mailconsole.config import SmtpSettings
from mailconsole.engine import policy
from mailconsole.engine.policy import Outcome, Stage

_MASK = "********"


@dataclass(frozen=True, slots=True)
class RecipientReply:
    """The relay's answer about one recipient."""

    recipient: str
    code: int
    enhanced: str | None
    text: str

    @property
    def outcome(self) -> Outcome:
        return policy.classify("rcpt", self.code, self.enhanced, self.text)


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
        self.enhanced = enhanced or policy.parse_enhanced(text)
        self.text = text
        self.outcome = outcome or policy.classify(stage, code, self.enhanced, text)
        self.after_data = after_data
        self.refused = refused
        super().__init__(self.reason)

    @property
    def reason(self) -> str:
        """One line an on-call human can act on (see :func:`policy.human_reason`)."""
        return policy.describe_failure(self)


class FailureText:
    """Builds :class:`SmtpFailure` for one relay, with the password scrubbed out."""

    def __init__(self, settings: SmtpSettings) -> None:
        self._settings = settings
        self.relay = f"{settings.host}:{settings.port}"
        self._secrets = _secret_forms(settings)

    def scrub(self, text: str) -> str:
        """``text`` with any form of the password masked (a relay may echo it)."""
        for secret in self._secrets:
            text = text.replace(secret, _MASK)
        return text

    def reply(self, stage: Stage, code: int, message: str) -> SmtpFailure:
        return SmtpFailure(stage, self.scrub(message), code=code)

    def of(
        self, stage: Stage, exc: BaseException, *, after_data: bool = False
    ) -> SmtpFailure:
        """Translate whatever aiosmtplib, the socket or TLS raised."""
        if isinstance(exc, aiosmtplib.SMTPResponseException) and exc.code >= 400:
            return self.reply(stage, exc.code, exc.message)
        tls_error = _ssl_error(exc)
        if tls_error is not None:
            return SmtpFailure("tls", self._tls_text(tls_error), outcome=Outcome.CONFIG)
        text, outcome = self._describe(stage, exc)
        return SmtpFailure(
            stage, self.scrub(text), outcome=outcome, after_data=after_data
        )

    def _describe(self, stage: Stage, exc: BaseException) -> tuple[str, Outcome | None]:
        """Text for a failure without a reply; ``None`` lets policy classify it."""
        relay, cause = self.relay, exc.__cause__
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
            return f"TLS certificate of {self.relay} not trusted: {why}"
        return f"TLS handshake with {self.relay} failed: {exc.reason or exc}"


def _ssl_error(exc: BaseException) -> ssl.SSLError | None:
    # aiosmtplib wraps a failed implicit-TLS handshake in SMTPConnectError.
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None or isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _secret_forms(settings: SmtpSettings) -> tuple[str, ...]:
    """The password as a relay could echo it: plain, base64 (AUTH LOGIN) and the
    base64 AUTH PLAIN token; longest first so no form is half-masked."""
    if settings.password is None or not settings.password.get_secret_value():
        return ()
    password = settings.password.get_secret_value()
    plain = f"\0{settings.username or ''}\0{password}".encode()
    forms = {
        password,
        base64.b64encode(password.encode()).decode(),
        base64.b64encode(plain).decode(),
    }
    return tuple(sorted(forms, key=len, reverse=True))
