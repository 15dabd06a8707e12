"""The fault-injecting test server does what its docstring promises."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.smtp_server import Fault, FaultySMTPServer


async def converse(server: FaultySMTPServer, *lines: bytes) -> list[bytes]:
    """Speak raw SMTP, one line at a time, and collect each reply's last line."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    replies = [await reader.readline()]
    try:
        for line in lines:
            writer.write(line)
            await writer.drain()
            reply = await reader.readline()
            while reply[3:4] == b"-":
                reply = await reader.readline()
            replies.append(reply)
    finally:
        writer.close()
        await writer.wait_closed()
    return replies


async def test_bare_line_ends_are_seen(smtp_server: FaultySMTPServer) -> None:
    body = b"Message-ID: <bare@test>\r\n\r\nsmuggle\n.\nMAIL FROM:<x@y>\r\n.\r\n"
    replies = await converse(
        smtp_server,
        b"EHLO raw.test\r\n",
        b"MAIL FROM:<a@x.test>\r\n",
        b"RCPT TO:<b@x.test>\r\n",
        b"DATA\r\n",
        body,
    )
    assert replies[-1].startswith(b"250")
    (got,) = await smtp_server.wait_for(1)
    assert got.bare_crlf and got.message_id == "<bare@test>"
    assert b"smuggle\n.\nMAIL FROM" in got.data  # one message, not two


async def test_clean_message_has_no_bare_line_ends(
    smtp_server: FaultySMTPServer,
) -> None:
    await converse(
        smtp_server,
        b"HELO raw.test\r\n",
        b"MAIL FROM:<a@x.test>\r\n",
        b"RCPT TO:<b@x.test>\r\n",
        b"DATA\r\n",
        b"Subject: x\r\n\r\n..dot\r\n.\r\n",
    )
    (got,) = await smtp_server.wait_for(1)
    assert not got.bare_crlf and got.data == b"Subject: x\r\n\r\n.dot\r\n"


def test_fraction_is_repeatable_with_a_seed() -> None:
    def pattern() -> list[bool]:
        fault = Fault("mail", reply="451 x", fraction=0.5, seed=3)
        return [fault.fires("mail") for _ in range(40)]

    assert pattern() == pattern() and 5 < sum(pattern()) < 35


def test_times_and_recipient_matchers() -> None:
    fault = Fault("rcpt", reply="550 x", recipient="^bad", times=2)
    fired = [fault.fires("rcpt", r) for r in ["bad1", "ok", "bad2", "bad3"]]
    assert fired == [True, False, True, False] and fault.hits == 2
    assert not fault.fires("mail")


def test_nonsense_faults_are_rejected() -> None:
    with pytest.raises(ValueError):
        Fault("mail", recipient="x")
    with pytest.raises(ValueError):
        Fault("data_body", reply="451 x")


async def test_greeting_fault_and_refusal(smtp_server: FaultySMTPServer) -> None:
    smtp_server.faults.append(Fault("connect", reply="421 4.3.2 busy", times=1))
    assert (await converse(smtp_server))[0].startswith(b"421")
    assert (await converse(smtp_server))[0].startswith(b"220")
    smtp_server.refuse = True
    assert (await converse(smtp_server))[0] == b""
    assert smtp_server.connections == 3


async def test_drop_connections_closes_open_sessions(
    smtp_server: FaultySMTPServer,
) -> None:
    reader, writer = await asyncio.open_connection(smtp_server.host, smtp_server.port)
    await reader.readline()
    assert await smtp_server.drop_connections() == 1
    assert (await reader.readline()).startswith(b"421")
    assert await reader.read() == b""
    writer.close()


async def test_wait_for_times_out_clearly(smtp_server: FaultySMTPServer) -> None:
    with pytest.raises(TimeoutError, match="1 messages"):
        await smtp_server.wait_for(1, timeout=0.1)


async def test_async_lifecycle_and_settings() -> None:
    async with FaultySMTPServer(tls="starttls", auth=("u", "p")) as server:
        settings = server.smtp_settings(pool_size=2)
        assert (settings.port, settings.tls, settings.username) == (
            server.port,
            "starttls",
            "u",
        )
        assert server.ca_file is not None and server.ca_file.exists()
        ca_file = server.ca_file
    assert not ca_file.exists()
