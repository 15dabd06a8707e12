"""The SMTP pool against a real (fault-injecting) SMTP server over real sockets."""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
import time
import traceback
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from mailconsole.config import SmtpSettings
from mailconsole.engine.policy import Outcome
from mailconsole.engine.smtp import SmtpFailure, SmtpPool, wire_format
from mailconsole.engine.smtp_errors import FailureText
from tests.support.smtp_server import Fault, FaultySMTPServer

MakeServer = Callable[..., FaultySMTPServer]
MakePool = Callable[..., SmtpPool]
FROM, TO = "sender@example.test", "rcpt@example.test"
SECRET = "s3cret-Pa55word!"


def message(n: int = 0, body: bytes = b"hello\r\n") -> bytes:
    head = (
        f"From: {FROM}\r\nTo: {TO}\r\nMessage-ID: <m{n}@test>\r\n"
        f"X-Test-Job: job-{n}\r\nSubject: test {n}\r\n\r\n"
    )
    return head.encode() + body


@pytest.fixture
async def make_pool() -> AsyncIterator[MakePool]:
    pools: list[SmtpPool] = []

    def make(settings: SmtpSettings, **options: Any) -> SmtpPool:
        pool = SmtpPool(settings, **options)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        await pool.close()


async def failure_of(
    pool: SmtpPool, *recipients: str, data: bytes = b""
) -> SmtpFailure:
    with pytest.raises(SmtpFailure) as caught:
        await pool.send(FROM, list(recipients) or [TO], data or message())
    return caught.value


def unreachable() -> SmtpSettings:
    """Settings for a port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    return SmtpSettings.model_validate(
        {"host": "127.0.0.1", "port": port, "timeout": 1}
    )


# --- sending and reuse --------------------------------------------------------


async def test_plain_send(smtp_server: FaultySMTPServer, make_pool: MakePool) -> None:
    pool = make_pool(smtp_server.smtp_settings())
    outcome = await pool.send(FROM, [TO, "two@example.test"], message(1))
    assert [r.recipient for r in outcome.accepted] == [TO, "two@example.test"]
    assert all(r.code == 250 for r in outcome.accepted)
    assert outcome.refused == () and "queued" in outcome.data_reply
    (got,) = await smtp_server.wait_for(1)
    assert (got.envelope_from, got.recipients) == (FROM, (TO, "two@example.test"))
    assert (got.message_id, got.job_key, got.tls) == ("<m1@test>", "job-1", False)
    assert got.data == message(1)
    assert pool.stats().sent == 1


async def test_connection_is_reused(
    smtp_server: FaultySMTPServer, make_pool: MakePool
) -> None:
    pool = make_pool(smtp_server.smtp_settings(pool_size=4))
    for n in range(20):
        await pool.send(FROM, [TO], message(n))
    assert smtp_server.connections == 1 and pool.stats().connects == 1
    assert smtp_server.events.count("ehlo") == 1  # no per-message EHLO
    assert pool.stats() == pool.stats().__class__(
        size=4, open=1, idle=1, busy=0, sent=20, failed=0, connects=1, last_error=None
    )


async def test_fifty_concurrent_sends_share_four_connections(
    smtp_server: FaultySMTPServer, make_pool: MakePool
) -> None:
    pool = make_pool(smtp_server.smtp_settings(pool_size=4))
    await asyncio.gather(*(pool.send(FROM, [TO], message(n)) for n in range(50)))
    await smtp_server.wait_for(50)
    counts = smtp_server.count_by_message_id()
    assert len(counts) == 50 and set(counts.values()) == {1}
    assert pool.stats().connects <= 4 and smtp_server.connections <= 4
    assert pool.stats().busy == 0


async def test_connections_are_recycled_after_max_messages(
    smtp_server: FaultySMTPServer, make_pool: MakePool
) -> None:
    pool = make_pool(smtp_server.smtp_settings(), max_messages=3)
    for n in range(7):
        await pool.send(FROM, [TO], message(n))
    assert pool.stats().connects == 3


async def test_idle_connections_are_recycled(
    smtp_server: FaultySMTPServer, make_pool: MakePool
) -> None:
    pool = make_pool(smtp_server.smtp_settings(), max_idle=0.0)
    await pool.send(FROM, [TO], message(1))
    await pool.send(FROM, [TO], message(2))
    assert pool.stats().connects == 2
    assert len(await smtp_server.wait_for(2)) == 2


async def test_probe_connects_and_learns_smtputf8(
    smtp_server: FaultySMTPServer, make_pool: MakePool
) -> None:
    pool = make_pool(smtp_server.smtp_settings())
    assert pool.smtputf8_available is None
    assert await pool.probe() is True
    assert pool.smtputf8_available is True
    await pool.send(FROM, [TO], message())
    assert smtp_server.connections == 1  # the probe's connection was kept


async def test_probe_reports_an_unreachable_relay(make_pool: MakePool) -> None:
    settings = unreachable()
    pool = make_pool(settings)
    assert await pool.probe() is False
    assert "connection refused" in (pool.stats().last_error or "")


async def test_closed_pool_refuses_to_send(
    smtp_server: FaultySMTPServer, make_pool: MakePool
) -> None:
    pool = make_pool(smtp_server.smtp_settings())
    await pool.send(FROM, [TO], message())
    await pool.close()
    assert pool.stats().open == 0
    failure = await failure_of(pool)
    assert failure.outcome is Outcome.TRANSIENT and "closed" in failure.text


# --- what the bytes look like on the wire -------------------------------------


async def test_line_ends_are_normalised_and_dots_stuffed(
    smtp_server: FaultySMTPServer, make_pool: MakePool
) -> None:
    body = b"one\nbare\rcr\r\n.leading dot\n.\nafter a lone dot\r\n..two dots"
    pool = make_pool(smtp_server.smtp_settings())
    await pool.send(FROM, [TO], message(body=body))
    (got,) = await smtp_server.wait_for(1)
    assert not got.bare_crlf
    assert got.data.endswith(
        b"one\r\nbare\r\ncr\r\n.leading dot\r\n.\r\nafter a lone dot\r\n..two dots\r\n"
    )


@pytest.mark.parametrize(
    ("data", "payload", "size"),
    [
        (b".a\nb", b"..a\r\nb\r\n.\r\n", 7),
        (b"x\r\n", b"x\r\n.\r\n", 3),
        (b"a\r\nb", b"a\r\nb\r\n.\r\n", 6),
        (b"a\r\r\nb\n\r", b"a\r\n\r\nb\r\n\r\n.\r\n", 10),
        (b"a\r\n.\r\nb\r\n", b"a\r\n..\r\nb\r\n.\r\n", 9),
    ],
)
def test_wire_format(data: bytes, payload: bytes, size: int) -> None:
    assert wire_format(data) == (payload, size)


async def test_oversized_message_fails_without_connecting(
    smtp_server: FaultySMTPServer, make_pool: MakePool
) -> None:
    pool = make_pool(smtp_server.smtp_settings(max_message_size=1024))
    failure = await failure_of(pool, data=message(body=b"x" * 2000))
    assert (failure.stage, failure.outcome) == ("mail", Outcome.PERMANENT)
    assert smtp_server.connections == 0


async def test_relay_size_limit_is_announced_and_refused_at_mail(
    make_smtp_server: MakeServer, make_pool: MakePool
) -> None:
    server = make_smtp_server(max_size=1500)
    pool = make_pool(server.smtp_settings())
    failure = await failure_of(pool, data=message(body=b"x" * 2000))
    assert (failure.stage, failure.code, failure.outcome) == (
        "mail",
        552,
        Outcome.PERMANENT,
    )
    assert "data" not in server.events


# --- per-recipient replies ----------------------------------------------------


async def test_partial_refusal_lists_the_refused(
    smtp_server: FaultySMTPServer, make_pool: MakePool
) -> None:
    smtp_server.faults.append(
        Fault("rcpt", reply="550 5.1.1 no such user", recipient="^bad")
    )
    smtp_server.faults.append(
        Fault("rcpt", reply="452 4.2.2 mailbox full", recipient="^full")
    )
    pool = make_pool(smtp_server.smtp_settings())
    rcpts = ["ok1@x.test", "bad@x.test", "full@x.test", "ok2@x.test"]
    outcome = await pool.send(FROM, rcpts, message())
    assert [r.recipient for r in outcome.accepted] == ["ok1@x.test", "ok2@x.test"]
    refused = {r.recipient: (r.code, r.enhanced) for r in outcome.refused}
    assert refused == {"bad@x.test": (550, "5.1.1"), "full@x.test": (452, "4.2.2")}
    (got,) = await smtp_server.wait_for(1)
    assert got.recipients == ("ok1@x.test", "ok2@x.test")


@pytest.mark.parametrize(
    ("replies", "code", "outcome"),
    [
        (["550 5.1.1 no such user", "553 5.1.3 bad syntax"], 550, Outcome.PERMANENT),
        (["550 5.1.1 no such user", "452 4.5.3 too many"], 452, Outcome.TRANSIENT),
    ],
)
async def test_all_refused_fails_at_rcpt_with_the_most_hopeful_reply(
    smtp_server: FaultySMTPServer,
    make_pool: MakePool,
    replies: list[str],
    code: int,
    outcome: Outcome,
) -> None:
    smtp_server.faults += [
        Fault("rcpt", reply=reply, recipient=f"^r{i}@")
        for i, reply in enumerate(replies)
    ]
    pool = make_pool(smtp_server.smtp_settings())
    failure = await failure_of(pool, "r0@x.test", "r1@x.test")
    assert (failure.stage, failure.code, failure.outcome) == ("rcpt", code, outcome)
    assert [r.code for r in failure.refused] == [int(r[:3]) for r in replies]
    # The envelope was reset: the same connection carries the next message.
    await pool.send(FROM, [TO], message())
    assert smtp_server.connections == 1 and smtp_server.events.count("data") == 1


async def test_unsendable_recipient_is_refused_locally(
    smtp_server: FaultySMTPServer, make_pool: MakePool
) -> None:
    pool = make_pool(smtp_server.smtp_settings())
    bad = ["x\r\nRCPT TO:<evil@x.test>", "a@x.test, evil@x.test", "Name <evil@x.test>"]
    outcome = await pool.send(FROM, [TO, *bad], message())
    assert [(r.recipient, r.code) for r in outcome.refused] == [(b, 553) for b in bad]
    (got,) = await smtp_server.wait_for(1)
    assert got.recipients == (TO,)


async def test_unsendable_sender_is_permanent(
    smtp_server: FaultySMTPServer, make_pool: MakePool
) -> None:
    pool = make_pool(smtp_server.smtp_settings())
    with pytest.raises(SmtpFailure) as caught:
        await pool.send("a@x.test\r\nRSET", [TO], message())
    assert (caught.value.stage, caught.value.outcome) == ("mail", Outcome.PERMANENT)
    assert smtp_server.connections == 0


async def test_null_sender_is_allowed(
    smtp_server: FaultySMTPServer, make_pool: MakePool
) -> None:
    pool = make_pool(smtp_server.smtp_settings())
    await pool.send("", [TO], message())
    (got,) = await smtp_server.wait_for(1)
    assert got.envelope_from == "<>"


# --- replies that fail the transaction ----------------------------------------


@pytest.mark.parametrize(
    ("fault", "stage", "code", "outcome"),
    [
        (
            Fault("mail", reply="550 5.7.1 sender rejected"),
            "mail",
            550,
            Outcome.PERMANENT,
        ),
        (Fault("mail", reply="451 4.3.0 try later"), "mail", 451, Outcome.TRANSIENT),
        (Fault("data", reply="451 4.3.0 DATA not now"), "data", 451, Outcome.TRANSIENT),
        (
            Fault("after_data", reply="451 4.7.1 greylisted"),
            "data",
            451,
            Outcome.TRANSIENT,
        ),
        (
            Fault("after_data", reply="554 5.6.0 content rejected"),
            "data",
            554,
            Outcome.PERMANENT,
        ),
        (
            Fault("connect", reply="421 4.3.2 too busy"),
            "connect",
            421,
            Outcome.TRANSIENT,
        ),
        (Fault("connect", reply="554 5.7.1 go away"), "connect", 554, Outcome.CONFIG),
    ],
)
async def test_refusals(
    smtp_server: FaultySMTPServer,
    make_pool: MakePool,
    fault: Fault,
    stage: str,
    code: int,
    outcome: Outcome,
) -> None:
    smtp_server.faults.append(fault)
    pool = make_pool(smtp_server.smtp_settings())
    failure = await failure_of(pool)
    assert (failure.stage, failure.code, failure.outcome) == (stage, code, outcome)
    assert failure.after_data is False
    assert smtp_server.received == []
    assert pool.stats().failed == 1 and pool.stats().last_error == failure.reason


async def test_first_n_data_refusals_then_success(
    smtp_server: FaultySMTPServer, make_pool: MakePool
) -> None:
    smtp_server.faults.append(Fault("after_data", reply="451 4.3.0 later", times=2))
    pool = make_pool(smtp_server.smtp_settings())
    for _ in range(2):
        assert (await failure_of(pool)).outcome is Outcome.TRANSIENT
    await pool.send(FROM, [TO], message())
    assert len(smtp_server.received) == 1 and smtp_server.connections == 1


async def test_a_seeded_fraction_of_failures_under_concurrency(
    smtp_server: FaultySMTPServer, make_pool: MakePool
) -> None:
    smtp_server.faults.append(
        Fault("after_data", reply="451 4.3.0 x", fraction=0.3, seed=5)
    )
    pool = make_pool(smtp_server.smtp_settings(pool_size=4))
    results = await asyncio.gather(
        *(pool.send(FROM, [TO], message(n)) for n in range(50)), return_exceptions=True
    )
    failed = [r for r in results if isinstance(r, SmtpFailure)]
    assert 0 < len(failed) < 50 and len(failed) == smtp_server.faults[0].hits
    assert all(f.outcome is Outcome.TRANSIENT for f in failed)
    assert len(smtp_server.received) + len(failed) == 50
    assert set(smtp_server.count_by_message_id().values()) == {1}


# --- lost connections and timeouts --------------------------------------------


async def test_idle_connection_closed_by_the_relay_is_replaced(
    smtp_server: FaultySMTPServer, make_pool: MakePool
) -> None:
    pool = make_pool(smtp_server.smtp_settings())
    await pool.send(FROM, [TO], message(1))
    assert await smtp_server.drop_connections() == 1
    await pool.send(FROM, [TO], message(2))
    await smtp_server.wait_for(2)
    assert smtp_server.count_by_message_id() == {"<m1@test>": 1, "<m2@test>": 1}
    assert pool.stats().connects == 2 and pool.stats().failed == 0


@pytest.mark.parametrize(
    "fault",
    [Fault("mail", drop=True, times=1), Fault("mail", reply="421 4.4.2 bye", times=1)],
)
async def test_reused_connection_dying_at_mail_is_retried_once(
    smtp_server: FaultySMTPServer, make_pool: MakePool, fault: Fault
) -> None:
    pool = make_pool(smtp_server.smtp_settings())
    await pool.send(FROM, [TO], message(1))
    smtp_server.faults.append(fault)  # the relay hangs up on the next MAIL
    await pool.send(FROM, [TO], message(2))
    await smtp_server.wait_for(2)
    assert set(smtp_server.count_by_message_id().values()) == {1}
    assert pool.stats().connects == 2 and fault.hits == 1


async def test_fresh_connection_dying_at_mail_is_not_retried(
    smtp_server: FaultySMTPServer, make_pool: MakePool
) -> None:
    smtp_server.faults.append(Fault("mail", drop=True, times=1))
    pool = make_pool(smtp_server.smtp_settings())
    failure = await failure_of(pool)
    assert (failure.stage, failure.code, failure.outcome) == (
        "mail",
        None,
        Outcome.TRANSIENT,
    )
    assert smtp_server.connections == 1


async def test_drop_after_the_final_dot_is_an_unknown_outcome(
    smtp_server: FaultySMTPServer, make_pool: MakePool
) -> None:
    smtp_server.faults.append(Fault("after_data", drop=True, times=1))
    pool = make_pool(smtp_server.smtp_settings())
    failure = await failure_of(pool, data=message(7))
    assert failure.after_data is True and failure.stage == "data"
    assert failure.outcome is Outcome.TRANSIENT and "may have been delivered" in str(
        failure
    )
    (got,) = await smtp_server.wait_for(1)  # the relay did get it
    assert got.message_id == "<m7@test>"
    assert smtp_server.connections == 1  # and it was not silently sent again


async def test_drop_mid_data_is_reported_as_unknown_too(
    smtp_server: FaultySMTPServer, make_pool: MakePool
) -> None:
    # Once the final dot is written the client cannot tell "mid-body" from
    # "after the dot": it must assume the worst (a possible duplicate later).
    smtp_server.faults.append(Fault("data_body", drop=True))
    pool = make_pool(smtp_server.smtp_settings())
    failure = await failure_of(pool)
    assert failure.after_data is True and smtp_server.received == []


async def test_stall_at_mail_times_out_within_the_timeout(
    smtp_server: FaultySMTPServer, make_pool: MakePool
) -> None:
    smtp_server.faults.append(Fault("mail", stall=float("inf")))
    pool = make_pool(smtp_server.smtp_settings(timeout=0.5))
    started = time.monotonic()
    failure = await failure_of(pool)
    assert time.monotonic() - started < 1.5
    assert (failure.stage, failure.code, failure.outcome) == (
        "mail",
        None,
        Outcome.TRANSIENT,
    )
    assert "0.5 s" in failure.text and failure.after_data is False
    assert pool.stats().open == 0  # a desynchronised connection is not reused


async def test_stall_after_the_final_dot_uses_data_timeout(
    smtp_server: FaultySMTPServer, make_pool: MakePool
) -> None:
    smtp_server.faults.append(Fault("after_data", stall=float("inf")))
    pool = make_pool(smtp_server.smtp_settings(timeout=5, data_timeout=0.5))
    started = time.monotonic()
    failure = await failure_of(pool)
    assert time.monotonic() - started < 1.5
    assert failure.after_data is True and len(smtp_server.received) == 1


async def test_a_slow_final_reply_within_data_timeout_succeeds(
    smtp_server: FaultySMTPServer, make_pool: MakePool
) -> None:
    smtp_server.faults.append(Fault("after_data", stall=0.8))
    pool = make_pool(smtp_server.smtp_settings(timeout=0.3, data_timeout=5))
    await pool.send(FROM, [TO], message())
    assert len(smtp_server.received) == 1


async def test_a_cancelled_send_does_not_return_its_connection(
    smtp_server: FaultySMTPServer, make_pool: MakePool
) -> None:
    smtp_server.faults.append(Fault("rcpt", stall=float("inf")))
    pool = make_pool(smtp_server.smtp_settings())
    task = asyncio.create_task(pool.send(FROM, [TO], message()))
    await smtp_server.wait_for_event("rcpt")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pool.stats().open == 0 and pool.stats().busy == 0


async def test_connection_refused(make_pool: MakePool) -> None:
    pool = make_pool(unreachable())
    failure = await failure_of(pool)
    assert (failure.stage, failure.code, failure.outcome) == (
        "connect",
        None,
        Outcome.TRANSIENT,
    )
    assert str(failure).startswith(
        "relay unreachable: connection refused to 127.0.0.1:"
    )


async def test_relay_refusing_for_a_while(
    smtp_server: FaultySMTPServer, make_pool: MakePool
) -> None:
    pool = make_pool(smtp_server.smtp_settings())
    await smtp_server.stop_listening()
    assert "connection refused" in (await failure_of(pool)).text
    smtp_server.refuse = True
    await smtp_server.start_listening()
    assert "before its greeting" in (await failure_of(pool)).text
    smtp_server.refuse = False
    await pool.send(FROM, [TO], message())
    assert len(smtp_server.received) == 1


# --- TLS ------------------------------------------------------------------------


async def test_starttls_required_but_not_offered(
    smtp_server: FaultySMTPServer, make_pool: MakePool
) -> None:
    pool = make_pool(smtp_server.smtp_settings(tls="starttls"))
    failure = await failure_of(pool)
    assert (failure.stage, failure.outcome) == ("tls", Outcome.CONFIG)
    assert "does not offer STARTTLS" in failure.text
    assert "mail" not in smtp_server.events and smtp_server.received == []


async def test_starttls_with_trusted_ca_and_auth(
    make_smtp_server: MakeServer, make_pool: MakePool
) -> None:
    server = make_smtp_server(tls="starttls", auth=("mailer", SECRET))
    pool = make_pool(server.smtp_settings())
    await pool.send(FROM, [TO], message())
    (got,) = await server.wait_for(1)
    assert got.tls and got.login == "mailer"
    assert server.events[:5] == ["connect", "ehlo", "starttls", "ehlo", "auth:PLAIN:ok"]


async def test_implicit_tls(make_smtp_server: MakeServer, make_pool: MakePool) -> None:
    server = make_smtp_server(tls="tls")
    pool = make_pool(server.smtp_settings())
    await pool.send(FROM, [TO], message())
    (got,) = await server.wait_for(1)
    assert got.tls


@pytest.mark.parametrize("mode", ["starttls", "tls"])
async def test_untrusted_certificate(
    make_smtp_server: MakeServer, make_pool: MakePool, mode: str
) -> None:
    server = make_smtp_server(tls=mode)
    pool = make_pool(server.smtp_settings(ca_file=None))
    failure = await failure_of(pool)
    assert (failure.stage, failure.outcome) == ("tls", Outcome.CONFIG)
    assert failure.text.startswith(
        f"TLS certificate of 127.0.0.1:{server.port} not trusted"
    )
    assert server.received == []


async def test_wrong_host_name_is_not_trusted(
    make_smtp_server: MakeServer, make_pool: MakePool
) -> None:
    server = make_smtp_server(tls="tls", cert_names=["relay.test"])
    pool = make_pool(server.smtp_settings())  # 127.0.0.1 is not in the certificate
    failure = await failure_of(pool)
    assert failure.stage == "tls" and "not trusted" in failure.text
    assert "mismatch" in failure.text


@pytest.mark.parametrize("mode", ["starttls", "tls"])
async def test_verification_off_works_and_warns(
    make_smtp_server: MakeServer,
    make_pool: MakePool,
    mode: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = make_smtp_server(tls=mode)
    pool = make_pool(server.smtp_settings(ca_file=None, verify=False))
    await pool.send(FROM, [TO], message())
    assert len(server.received) == 1
    assert "verification is OFF" in caplog.text


# --- AUTH -----------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
async def test_auth_works(
    make_smtp_server: MakeServer, make_pool: MakePool, mechanism: str
) -> None:
    server = make_smtp_server(auth=("mailer", SECRET), auth_mechanisms=[mechanism])
    pool = make_pool(server.smtp_settings())
    await pool.send(FROM, [TO], message())
    assert f"auth:{mechanism}:ok" in server.events


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
async def test_wrong_password_is_config_and_never_shown(
    make_smtp_server: MakeServer,
    make_pool: MakePool,
    caplog: pytest.LogCaptureFixture,
    mechanism: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    server = make_smtp_server(auth=("mailer", "right"), auth_mechanisms=[mechanism])
    pool = make_pool(server.smtp_settings(password=SECRET))
    failure = await failure_of(pool)
    assert (failure.stage, failure.code, failure.outcome) == (
        "auth",
        535,
        Outcome.CONFIG,
    )
    assert "MAILCONSOLE_SMTP_USERNAME" in str(failure)
    shown = "\n".join(
        [
            str(failure),
            repr(failure),
            failure.text,
            "".join(traceback.format_exception(failure)),
            caplog.text,
            str(pool.stats()),
        ]
    )
    for form in secret_forms("mailer", SECRET):
        assert form not in shown
    assert "mail" not in server.events


async def test_auth_not_offered(
    smtp_server: FaultySMTPServer, make_pool: MakePool
) -> None:
    pool = make_pool(smtp_server.smtp_settings(username="u", password=SECRET))
    failure = await failure_of(pool)
    assert (failure.stage, failure.outcome) == ("auth", Outcome.CONFIG)
    assert "does not offer AUTH" in failure.text


def secret_forms(user: str, password: str) -> list[str]:
    plain = f"\0{user}\0{password}".encode()
    return [
        password,
        base64.b64encode(password.encode()).decode(),
        base64.b64encode(plain).decode(),
    ]


def test_replies_echoing_the_password_are_scrubbed() -> None:
    settings = SmtpSettings.model_validate({"username": "mailer", "password": SECRET})
    errors = FailureText(settings)
    echo = "535 you sent " + " and ".join(secret_forms("mailer", SECRET))
    failure = errors.reply("auth", 535, echo)
    for form in secret_forms("mailer", SECRET):
        assert form not in str(failure) and form not in failure.text
    assert "********" in failure.text


# --- SMTPUTF8 -------------------------------------------------------------------


async def test_smtputf8_when_offered(
    smtp_server: FaultySMTPServer, make_pool: MakePool
) -> None:
    pool = make_pool(smtp_server.smtp_settings())
    body = "Grüße\r\n".encode()
    await pool.send(
        "absender@bücher.test",
        ["empfänger@bücher.test"],
        message(body=body),
        smtputf8=True,
    )
    (got,) = await smtp_server.wait_for(1)
    assert got.recipients == ("empfänger@bücher.test",)
    assert "SMTPUTF8" in got.mail_options and "BODY=8BITMIME" in got.mail_options
    assert pool.smtputf8_available is True


async def test_smtputf8_when_not_offered(
    make_smtp_server: MakeServer, make_pool: MakePool
) -> None:
    server = make_smtp_server(smtputf8=False)
    pool = make_pool(server.smtp_settings())
    with pytest.raises(SmtpFailure) as caught:
        await pool.send(FROM, ["empfänger@bücher.test"], message(), smtputf8=True)
    failure = caught.value
    assert (failure.stage, failure.outcome) == ("mail", Outcome.PERMANENT)
    assert failure.text == "relay does not support SMTPUTF8"
    assert pool.smtputf8_available is False
    await pool.send(FROM, [TO], message())  # the connection is still good
    assert server.connections == 1


async def test_non_ascii_address_without_smtputf8_is_permanent(
    smtp_server: FaultySMTPServer, make_pool: MakePool
) -> None:
    pool = make_pool(smtp_server.smtp_settings())
    with pytest.raises(SmtpFailure) as caught:
        await pool.send("absender@bücher.test", [TO], message())
    assert (caught.value.stage, caught.value.outcome) == ("mail", Outcome.PERMANENT)
