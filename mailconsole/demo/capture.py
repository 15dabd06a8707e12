"""The demo's relay: an SMTP server on 127.0.0.1 that keeps what it receives and
fails on purpose, so a new user sees retries and dead letters within seconds.

Recipients decide the answer (the local part's prefix):

* ``bounce…@`` — ``550 5.1.1`` no such user (permanent: dead at once)
* ``full…@`` — ``552 5.2.2`` mailbox full (permanent)
* ``greylist…@`` — ``451 4.7.1`` the first time, accepted when tried again
* ``flaky…@`` — ``451 4.3.0`` every time (retried until the engine gives up)
* anything else — accepted, except a seeded few that get ``451 4.4.2`` once

It runs aiosmtpd's protocol in the console's own event loop (no thread) and is for
the demo only: it accepts anyone and keeps mail in memory.
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import random
from collections import deque
from dataclasses import dataclass
from datetime import datetime

from aiosmtpd.smtp import SMTP, Envelope, Session

from mailconsole.engine.clock import Clock

KEEP = 2_000
"""Captured messages kept (oldest dropped first)."""
_HEADERS = email.parser.BytesHeaderParser(policy=email.policy.default)


@dataclass(frozen=True)
class Captured:
    """One message the demo relay accepted."""

    number: int
    received_at: datetime
    mail_from: str
    rcpt_tos: tuple[str, ...]
    subject: str
    data: bytes


class CaptureLog:
    """What the relay received, newest first; ``version`` grows with each message."""

    def __init__(self, keep: int = KEEP) -> None:
        self._mail: deque[Captured] = deque(maxlen=keep)
        self.version = 0

    def add(self, mail: Captured) -> None:
        self._mail.append(mail)
        self.version += 1

    def latest(self, limit: int) -> list[Captured]:
        return list(reversed(self._mail))[:limit]

    def get(self, number: int) -> Captured | None:
        return next((m for m in self._mail if m.number == number), None)

    def __len__(self) -> int:
        return len(self._mail)


def _subject(data: bytes) -> str:
    try:
        return str(_HEADERS.parsebytes(data).get("Subject", ""))
    except Exception:  # a broken header is still captured, just without a subject
        return ""


class CaptureHandler:
    """aiosmtpd handler: answers by recipient, records accepted mail."""

    def __init__(
        self, log: CaptureLog, clock: Clock, *, seed: int = 7, flaky_share: float = 0.05
    ) -> None:
        self.log = log
        self.clock = clock
        self.rng = random.Random(seed)
        self.flaky_share = flaky_share
        self._greylisted: set[str] = set()
        self._number = 0

    def verdict(self, address: str) -> str | None:
        """The refusal for ``address``, or ``None`` to accept it."""
        local = address.partition("@")[0].lower()
        if local.startswith("bounce"):
            return f"550 5.1.1 <{address}>: no such user here"
        if local.startswith("full"):
            return f"552 5.2.2 <{address}>: mailbox full"
        if local.startswith("flaky"):
            return "451 4.3.0 temporary local problem, try again later"
        greylist = local.startswith("greylist") or self.rng.random() < self.flaky_share
        if greylist and address not in self._greylisted:
            self._greylisted.add(address)
            return f"451 4.7.1 <{address}>: greylisted, try again later"
        return None

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if (refusal := self.verdict(address)) is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        data = envelope.original_content or b""
        self._number += 1
        self.log.add(
            Captured(
                number=self._number,
                received_at=self.clock.now(),
                mail_from=str(envelope.mail_from or ""),
                rcpt_tos=tuple(envelope.rcpt_tos),
                subject=_subject(data),
                data=data,
            )
        )
        return f"250 2.0.0 OK queued as demo-{self._number}"


async def start_capture(
    log: CaptureLog, clock: Clock, *, host: str = "127.0.0.1", port: int = 0
) -> tuple[asyncio.Server, int]:
    """Listen on ``host:port`` (0 = any free port); returns the server and its port."""
    handler = CaptureHandler(log, clock)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(
            handler, hostname="demo-relay", enable_SMTPUTF8=True, decode_data=False
        ),
        host,
        port,
    )
    bound = server.sockets[0].getsockname()[1]
    return server, int(bound)
