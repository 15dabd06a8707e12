"""A real SMTP server for tests that records what it gets and misbehaves on request.

An aiosmtpd ``Controller`` in its own thread on 127.0.0.1 (a free port), so the code
under test talks to it over real sockets with real TLS, exactly as to a relay. Faults
(:class:`Fault`) make it answer with a code, drop the connection or stall at a
chosen stage, for the first N times, for matching recipients, or for a seeded
fraction of occurrences.

Stages, in session order:
``connect`` (instead of the greeting), ``helo`` (EHLO/HELO), ``mail``, ``rcpt``,
``data`` (the DATA command, before 354), ``data_body`` (after 354, once the first
line of the message arrived: only ``drop``/``stall`` make sense there), and
``after_data`` (the final dot arrived). At ``after_data`` a ``reply`` rejects the
message (not recorded); ``drop`` and ``stall`` happen *after* the message is
recorded, since the server got it: that is the client's "unknown outcome" case.

It must not be used outside tests, and it must not fake the network: every fault
is something a real relay does on a real socket.
"""

from __future__ import annotations

import asyncio
import collections
import email.parser
import email.policy
import random
import re
import ssl
import tempfile
import threading
import warnings
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar, cast

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from mailconsole.config import SmtpSettings

FaultStage = Literal[
    "connect", "helo", "mail", "rcpt", "data", "data_body", "after_data"
]
_T = TypeVar("_T")
_BARE_CR_OR_LF = re.compile(rb"\r(?!\n)|(?<!\r)\n")
_HEADERS = email.parser.BytesHeaderParser(policy=email.policy.default)


@dataclass
class Fault:
    """One misbehaviour. ``stall`` happens first, then ``drop`` or ``reply``.

    Attributes:
        stage: where (see the module docstring).
        reply: a full reply line to send instead, e.g. ``"451 4.3.0 try later"``.
        drop: close the connection without a reply.
        stall: seconds to wait first; ``float("inf")`` waits until the client
            goes away. With neither ``reply`` nor ``drop`` the session goes on.
        recipient: a regex searched in the RCPT address (``rcpt`` stage only).
        times: fire only for the first ``times`` matching occurrences.
        fraction: fire for this share of matching occurrences (seeded, repeatable).
        hits: how often it fired so far.
    """

    stage: FaultStage
    reply: str | None = None
    drop: bool = False
    stall: float = 0.0
    recipient: str | None = None
    times: int | None = None
    fraction: float | None = None
    seed: int = 0
    hits: int = 0
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        if self.recipient is not None and self.stage != "rcpt":
            raise ValueError("a recipient matcher only makes sense at the rcpt stage")
        if self.stage == "data_body" and not self.drop:
            raise ValueError("data_body faults must drop (a reply mid-body is noise)")

    def fires(self, stage: FaultStage, recipient: str | None = None) -> bool:
        if stage != self.stage:
            return False
        if self.recipient is not None and not re.search(
            self.recipient, recipient or ""
        ):
            return False
        if self.times is not None and self.hits >= self.times:
            return False
        if self.fraction is not None and self._rng.random() >= self.fraction:
            return False
        self.hits += 1
        return True


@dataclass(frozen=True)
class Received:
    """One message the server accepted (or got before dropping/stalling)."""

    envelope_from: str
    recipients: tuple[str, ...]
    data: bytes
    """As the client sent it, with dot-stuffing undone and line ends untouched."""
    message_id: str | None
    job_key: str | None
    """The ``X-Test-Job`` header, a test's own idempotency tag."""
    bare_crlf: bool
    """The data holds a CR or LF that is not part of a CRLF pair (aiosmtpd splits
    lines on CRLF only, so such bytes reach us intact)."""
    peer: Any
    mail_options: tuple[str, ...]
    tls: bool
    login: str | None


class FaultySMTPServer:
    """A recording SMTP server on 127.0.0.1 with injectable faults.

    Use as ``with FaultySMTPServer(...) as server:`` or ``async with``; or call
    :meth:`start`/:meth:`stop`. Faults may be appended to :attr:`faults` while it
    runs (before the client acts).
    """

    def __init__(
        self,
        *,
        faults: Iterable[Fault] = (),
        tls: Literal["none", "starttls", "tls"] = "none",
        auth: tuple[str, str] | None = None,
        auth_mechanisms: Sequence[str] | None = None,
        smtputf8: bool = True,
        max_size: int | None = None,
        idle_timeout: float = 300.0,
        cert_names: Sequence[str] = ("127.0.0.1", "localhost"),
    ) -> None:
        self.faults: list[Fault] = list(faults)
        self.tls = tls
        self.received: list[Received] = []
        self.rejected: list[tuple[str, ...]] = []
        """Recipients of messages refused at ``after_data`` by a fault's reply."""
        self.events: list[str] = []
        """What clients did, in order: "connect", "ehlo", "starttls", "auth:PLAIN:ok",
        "mail", "rcpt", "data". Tests assert e.g. that no MAIL ever came."""
        self.connections = 0
        self.refuse = False
        """While true, new connections are closed at once, without a greeting."""
        self.host = "127.0.0.1"
        self.port = 0
        self.ca_file: Path | None = None
        self._auth = auth
        self._mechanisms = auth_mechanisms
        self._smtputf8 = smtputf8
        self._max_size = max_size
        self._idle_timeout = idle_timeout
        self._cert_names = tuple(cert_names)
        self._armed = False
        self._live: set[_FaultySMTP] = set()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._lock = threading.Lock()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._controller: _Controller | None = None

    # --- lifecycle ------------------------------------------------------------

    def start(self) -> FaultySMTPServer:
        server_tls = self._make_tls() if self.tls != "none" else None
        smtp_kwargs: dict[str, Any] = {
            "enable_SMTPUTF8": self._smtputf8,
            "data_size_limit": self._max_size,
            "timeout": self._idle_timeout,
            "tls_context": server_tls if self.tls == "starttls" else None,
        }
        if self._auth is not None:
            smtp_kwargs |= self._auth_kwargs()
        self._controller = _Controller(
            self,
            ssl_context=server_tls if self.tls == "tls" else None,
            server_hostname="faulty.test",
            **smtp_kwargs,
        )
        self._controller.start()
        self._armed = True
        return self

    def stop(self) -> None:
        self._armed = False
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> FaultySMTPServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> FaultySMTPServer:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.stop)

    def smtp_settings(self, **overrides: Any) -> SmtpSettings:
        """Client settings pointing at this server, with short test timeouts."""
        values: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "tls": self.tls,
            "ca_file": self.ca_file,
            "timeout": 2.0,
            "data_timeout": 2.0,
            "pool_size": 4,
            "helo_name": "client.test",
        }
        if self._auth is not None:
            values["username"], values["password"] = self._auth
        return SmtpSettings.model_validate(values | overrides)

    # --- what tests look at -----------------------------------------------------

    def count_by_message_id(self) -> collections.Counter[str | None]:
        return collections.Counter(r.message_id for r in list(self.received))

    # A per-call deadline reads best in tests (the brief's API), hence the noqa.
    async def wait_for(self, n: int, timeout: float = 5.0) -> list[Received]:
        """Wait until at least ``n`` messages were received; returns them all.

        Raises:
            TimeoutError: fewer arrived within ``timeout`` seconds.
        """
        await self._wait_until(
            lambda: len(self.received) >= n, timeout, f"{n} messages"
        )
        return list(self.received)

    async def wait_for_event(self, event: str, timeout: float = 5.0) -> None:
        """Wait until a client did ``event`` (see :attr:`events`), e.g. ``"rcpt"``."""
        await self._wait_until(lambda: event in self.events, timeout, repr(event))

    async def _wait_until(
        self, done: Callable[[], bool], seconds: float, what: str
    ) -> None:
        # The server runs in another thread: it wakes us through our own loop.
        entry = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._waiters.add(entry)
        try:
            async with asyncio.timeout(seconds):
                while not done():
                    await entry[1].wait()
                    entry[1].clear()
        except TimeoutError:
            raise TimeoutError(
                f"waited {seconds}s for {what}; received {len(self.received)}, "
                f"events {self.events}"
            ) from None
        finally:
            with self._lock:
                self._waiters.discard(entry)

    # --- misbehaving on demand --------------------------------------------------

    async def drop_connections(self, reply: str | None = "421 4.4.2 idle, bye") -> int:
        """Close every open session from the server side, as an idle timeout does
        (first sending ``reply``, if any). Returns how many were closed."""

        async def drop_all() -> int:
            sessions = list(self._live)
            for session in sessions:
                if reply is not None and session.transport is not None:
                    transport = cast(asyncio.Transport, session.transport)
                    transport.write(reply.encode() + b"\r\n")
                session.drop()
            return len(sessions)

        return await self._in_server(drop_all())

    async def stop_listening(self) -> None:
        """Close the listening socket: new connections are refused (ECONNREFUSED)."""

        async def close() -> None:
            assert self._controller is not None and self._controller.server is not None
            self._controller.server.close()
            await self._controller.server.wait_closed()

        await self._in_server(close())

    async def start_listening(self) -> None:
        """Listen again on the same port after :meth:`stop_listening`."""

        async def listen() -> None:
            ctl = self._controller
            assert ctl is not None
            ctl.server = await ctl.loop.create_server(
                ctl._factory_invoker,
                host=self.host,
                port=self.port,
                ssl=ctl.ssl_context,
            )

        await self._in_server(listen())

    # --- internals --------------------------------------------------------------

    async def _in_server(self, coro: Coroutine[Any, Any, _T]) -> _T:
        assert self._controller is not None
        future = asyncio.run_coroutine_threadsafe(coro, self._controller.loop)
        return await asyncio.wrap_future(future)

    def _make_tls(self) -> ssl.SSLContext:
        ca = trustme.CA()
        cert = ca.issue_cert(*self._cert_names)
        self._tmp = tempfile.TemporaryDirectory(prefix="faulty-smtp-")
        self.ca_file = Path(self._tmp.name) / "ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(context)
        return context

    def _auth_kwargs(self) -> dict[str, Any]:
        assert self._auth is not None
        user, password = self._auth[0].encode(), self._auth[1].encode()

        def check(
            server: SMTP,
            session: Session,
            envelope: Envelope,
            mechanism: str,
            data: Any,
        ) -> AuthResult:
            ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
                user,
                password,
            )
            self._note(f"auth:{mechanism}:{'ok' if ok else 'fail'}")
            return AuthResult(
                success=ok, handled=False, auth_data=data.login if ok else None
            )

        excluded = None
        if self._mechanisms is not None:
            excluded = [m for m in ("PLAIN", "LOGIN") if m not in self._mechanisms]
        return {
            "auth_required": True,
            # AUTH over plain TCP for plain tests; over STARTTLS only after it.
            "auth_require_tls": self.tls == "starttls",
            "authenticator": check,
            "auth_exclude_mechanism": excluded,
        }

    def _fault(self, stage: FaultStage, recipient: str | None = None) -> Fault | None:
        for fault in list(self.faults):
            if fault.fires(stage, recipient):
                return fault
        return None

    def _record(self, session: Session, envelope: Envelope, tls: bool) -> None:
        data = envelope.original_content or b""
        headers = _HEADERS.parsebytes(data)
        message_id, job = headers.get("Message-ID"), headers.get("X-Test-Job")
        received = Received(
            envelope_from=envelope.mail_from or "",
            recipients=tuple(envelope.rcpt_tos),
            data=data,
            message_id=str(message_id).strip() if message_id is not None else None,
            job_key=str(job).strip() if job is not None else None,
            bare_crlf=bool(_BARE_CR_OR_LF.search(data)),
            peer=session.peer,
            mail_options=tuple(envelope.mail_options),
            tls=tls,
            login=_login_name(session),
        )
        self.received.append(received)
        self._wake()

    def _note(self, event: str) -> None:
        self.events.append(event)
        self._wake()

    def _wake(self) -> None:
        with self._lock:
            waiters = list(self._waiters)
        for loop, event in waiters:
            loop.call_soon_threadsafe(event.set)


def _login_name(session: Session) -> str | None:
    login = session.auth_data  # what the authenticator put there: the login
    return login.decode() if isinstance(login, bytes) else None


async def _stall(seconds: float) -> None:
    if seconds == float("inf"):
        await asyncio.Event().wait()  # until the connection is lost or we stop
    elif seconds > 0:
        await asyncio.sleep(seconds)


class _FaultySMTP(SMTP):
    """aiosmtpd's SMTP with hooks where its handler API has none (greeting, DATA)."""

    def __init__(self, owner: FaultySMTPServer, handler: _Handler, **kwargs: Any):
        super().__init__(handler, **kwargs)
        self.owner = owner

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        upgrade = self.transport is not None  # STARTTLS re-enters here
        super().connection_made(transport)
        if not upgrade:
            self.owner._live.add(self)

    def connection_lost(self, error: Exception | None) -> None:
        self.owner._live.discard(self)
        super().connection_lost(error)

    @property
    def tls_active(self) -> bool:
        transport = self.transport
        return (
            transport is not None and transport.get_extra_info("sslcontext") is not None
        )

    def drop(self) -> None:
        if self.transport is not None:
            cast(asyncio.Transport, self.transport).abort()

    async def act(self, fault: Fault) -> str | None:
        """Stall, then drop (never returns: the session is cancelled) or reply."""
        await _stall(fault.stall)
        if fault.drop:
            self.drop()
            await asyncio.Event().wait()
        return fault.reply

    async def _handle_client(self) -> None:
        owner = self.owner
        if owner._armed:  # not the Controller's own start-up probe
            owner.connections += 1
            owner._note("connect")
            if owner.refuse:
                self.drop()
                return
            fault = owner._fault("connect")
            if fault is not None and (reply := await self.act(fault)) is not None:
                await self.push(reply)
                assert self.transport is not None
                self.transport.close()
                return
        await super()._handle_client()

    async def smtp_DATA(self, arg: str) -> None:
        self.owner._note("data")
        fault = self.owner._fault("data")
        if fault is not None and (reply := await self.act(fault)) is not None:
            await self.push(reply)
            return
        if self.owner._fault("data_body") is not None:
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            await self._reader.readuntil(b"\r\n")
            self.drop()
            await asyncio.Event().wait()
        await super().smtp_DATA(arg)


class _Handler:
    """aiosmtpd handler hooks: record, and apply faults where a hook exists."""

    def __init__(self, owner: FaultySMTPServer) -> None:
        self.owner = owner

    async def handle_EHLO(
        self,
        server: _FaultySMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        self.owner._note("ehlo")
        fault = self.owner._fault("helo")
        if fault is not None and (reply := await server.act(fault)) is not None:
            return [reply]
        session.host_name = hostname
        return responses

    def handle_STARTTLS(
        self, server: _FaultySMTP, session: Session, envelope: Envelope
    ) -> bool:
        self.owner._note("starttls")
        return True

    async def handle_MAIL(
        self,
        server: _FaultySMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> str:
        self.owner._note("mail")
        fault = self.owner._fault("mail")
        if fault is not None and (reply := await server.act(fault)) is not None:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self,
        server: _FaultySMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> str:
        self.owner._note("rcpt")
        fault = self.owner._fault("rcpt", address)
        if fault is not None and (reply := await server.act(fault)) is not None:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 2.1.5 OK"

    async def handle_DATA(
        self, server: _FaultySMTP, session: Session, envelope: Envelope
    ) -> str:
        fault = self.owner._fault("after_data")
        if fault is not None and fault.reply is not None and not fault.drop:
            await _stall(fault.stall)
            self.owner.rejected.append(tuple(envelope.rcpt_tos))
            return fault.reply
        self.owner._record(session, envelope, server.tls_active)
        if fault is not None:
            await server.act(fault)
        return f"250 2.0.0 OK queued as {len(self.owner.received)}"


class _Controller(Controller):
    def __init__(self, owner: FaultySMTPServer, **kwargs: Any) -> None:
        self.owner = owner
        super().__init__(_Handler(owner), hostname=owner.host, port=0, **kwargs)

    def factory(self) -> SMTP:
        with warnings.catch_warnings():
            # "AUTH without TLS" is deliberate here: plain-socket auth tests.
            warnings.simplefilter("ignore")
            return _FaultySMTP(self.owner, self.handler, **self.SMTP_kwargs)

    def _trigger_server(self) -> None:
        # Port 0 picked a free port; aiosmtpd 1.4 does not read it back itself.
        server = cast(asyncio.Server, self.server)
        self.port = self.owner.port = server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]  # aiosmtpd's
