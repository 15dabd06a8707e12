"""Hostile input end to end: RabbitMQ -> engine -> store -> FaultySMTPServer.

Each hostile job must land in the dead list with a precise reason, the raw body kept,
and nothing sent that should not be, while a well-formed job published alongside is
delivered. The parser and renderer rules themselves are unit-tested (and property-
tested) in test_wire.py, test_wire_properties.py and test_render.py; this file proves
the worker applies them to what arrives on the queue and what reaches the relay.
"""

from __future__ import annotations

import email
import email.policy
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from mailconsole.config import Settings
from mailconsole.engine.runtime import Engine
from mailconsole.engine.store.models import MessageRow
from tests.support.engine import publish_raw, wait_for_statuses
from tests.support.smtp_server import FaultySMTPServer

pytestmark = pytest.mark.rabbitmq

Start = Callable[[Settings], Awaitable[Engine]]
Make = Callable[..., Settings]
MakeServer = Callable[..., FaultySMTPServer]
MiB = 1024 * 1024
VICTIM = "victim@evil.example"


def job(**fields: Any) -> bytes:
    base = {"from": "shop@example.com", "to": "bob@example.com", "subject": "s"}
    base.setdefault("text", "t")
    return json.dumps(base | fields, ensure_ascii=False).encode()


DEEP = (
    b'{"from":"a@example.com","to":"b@example.com","context":'
    + b'{"a":' * 1000
    + b"1"
    + b"}" * 1000
    + b"}"
)
B64_CRLF_BCC = "=?utf-8?b?DQpCY2M6IHZpY3RpbUBldmlsLmV4YW1wbGU=?="  # "\r\nBcc: victim@…"

# body -> the exact reason stored (after "rejected on arrival: ")
DEAD_ON_ARRIVAL: dict[str, tuple[bytes, str]] = {
    "malformed JSON": (
        b'{"from": "a@example.com", "to": ',
        "not valid JSON: Expecting value at line 1 column 33",
    ),
    "binary junk": (
        b"\xff\xfe\x00\x01junk\x80",
        "not UTF-8: invalid start byte at byte 0",
    ),
    "missing field": (
        json.dumps({"from": "a@example.com", "text": "x"}).encode(),
        "to: required field is missing",
    ),
    "wrong type": (
        job(to=5),
        "to: expected an address or a non-empty list of addresses, got integer",
    ),
    "wrong type in subject": (
        job(subject=["x"]),
        "subject: expected string or null, got array",
    ),
    ".NET object missing a field": (
        json.dumps({"SenderEmail": "a@example.com", "Content": "y"}).encode(),
        "RecipientEmail: required field is missing",
    ),
    "nesting 1,000 deep": (DEEP, "nested too deeply (more than 64 levels)"),
    "arrays 1,000 deep": (b"[" * 1000 + b"]" * 1000, "nested too deeply"),
    "CR/LF in subject": (
        job(subject=f"hi\r\nBcc: {VICTIM}"),
        "subject: contains a carriage return (CR)",
    ),
    "encoded LF in subject (CVE-2024-6923)": (
        job(subject=f"hi=?UTF-8?Q?=0A?=Bcc: {VICTIM}"),
        "subject: contains a control character in an RFC 2047 encoded word",
    ),
    "CR/LF in a display name": (
        job(to=[{"name": f"Bob\r\nBcc: {VICTIM}", "email": "bob@example.com"}]),
        "to[0].name: contains a carriage return (CR)",
    ),
    "encoded CR/LF in a display name": (
        job(to=[f"=?UTF-8?Q?Bob=0D=0ABcc:_{VICTIM}?= <bob@example.com>"]),
        "to[0]: contains a control character in an RFC 2047 encoded word",
    ),
    "encoded CR/LF in the sender's name": (
        job(**{"from": {"name": B64_CRLF_BCC, "email": "shop@example.com"}}),
        "from.name: contains a control character in an RFC 2047 encoded word",
    ),
    "CR/LF in an address": (
        job(to=f"bob@example.com\r\nBcc: {VICTIM}"),
        "to: contains a carriage return (CR)",
    ),
    "LF and RCPT in an address": (
        job(to=f"bob@example.com>\nRCPT TO:<{VICTIM}"),
        "to: contains a line feed (LF)",
    ),
    "encoded CR/LF in an extra header": (
        job(headers={"X-A": B64_CRLF_BCC}),
        "headers.X-A: contains a control character in an RFC 2047 encoded word",
    ),
    "CR/LF in a .NET RecipientName": (
        json.dumps(
            {
                "SenderName": "S",
                "SenderEmail": "a@example.com",
                "RecipientName": f"R\r\nBcc: {VICTIM}",
                "RecipientEmail": "b@example.com",
                "Subject": "s",
                "Content": "c",
            }
        ).encode(),
        "RecipientName: contains a carriage return (CR)",
    ),
    "lone surrogate": (
        b'{"from":"a@example.com","to":"b@example.com","subject":"\\ud800 x"}',
        "invalid Unicode (lone surrogate) in subject",
    ),
    "invalid UTF-8 inside a string": (
        b'{"from":"a@example.com","to":"b@example.com","text":"\xc3\x28"}',
        "not UTF-8: invalid continuation byte at byte 53",
    ),
}


async def dead_rows(engine: Engine) -> list[MessageRow]:
    async with engine.db.read() as session:
        result = await session.execute(
            select(MessageRow).where(MessageRow.status == "dead")
        )
        return list(result.scalars())


def nothing_reached_the_victim(server: FaultySMTPServer) -> None:
    for message in server.received:
        assert VICTIM not in " ".join(message.recipients)
        assert VICTIM.encode() not in message.data
    assert not any(VICTIM in e for e in server.events)


async def test_every_hostile_job_is_dead_on_arrival_with_a_precise_reason(
    amqp_url: str,
    queue_name: str,
    smtp_server: FaultySMTPServer,
    engine_factory: Make,
    running: Start,
) -> None:
    engine = await running(engine_factory(smtp_server.port))
    control = job(subject="the control message")
    bodies = [body for body, _ in DEAD_ON_ARRIVAL.values()]
    await publish_raw(amqp_url, queue_name, [*bodies, control], persistent=True)
    await wait_for_statuses(engine.db, {"dead": len(bodies), "sent": 1})
    by_body = {row.raw_body: row for row in await dead_rows(engine)}
    wrong = []
    for name, (body, reason) in DEAD_ON_ARRIVAL.items():
        row = by_body.get(body)
        error = row.last_error if row is not None else "<no dead row with this body>"
        if row is None or not (error or "").startswith(
            f"rejected on arrival: {reason}"
        ):
            wrong.append(f"{name}: {error!r}")
        elif row.attempts != 0 or row.source_format != "invalid":
            wrong.append(f"{name}: attempts {row.attempts}, {row.source_format}")
    assert not wrong, "\n".join(wrong)
    [got] = smtp_server.received
    assert got.recipients == ("bob@example.com",)
    assert smtp_server.events.count("mail") == 1
    nothing_reached_the_victim(smtp_server)


async def test_smuggling_body_reaches_the_relay_as_one_crlf_only_message(
    amqp_url: str,
    queue_name: str,
    smtp_server: FaultySMTPServer,
    engine_factory: Make,
    running: Start,
) -> None:
    """SMTP smuggling: bare LF, lone CR and "." lines must not end DATA early."""
    engine = await running(engine_factory(smtp_server.port))
    text = (
        "a\n.\nMAIL FROM:<evil@evil.example>\nRCPT TO:<victim@evil.example>\n"
        "b\r.\rc\r\n.\r\nDATA\r\n.\n"
    )
    await publish_raw(amqp_url, queue_name, [job(text=text, html=f"<p>{text}</p>")])
    await wait_for_statuses(engine.db, {"sent": 1})
    await engine.run_until_idle()
    [got] = smtp_server.received
    assert smtp_server.events.count("mail") == 1
    assert smtp_server.events.count("data") == 1
    assert got.recipients == ("bob@example.com",) and not got.bare_crlf
    message = email.message_from_bytes(got.data, policy=email.policy.default)
    body = message.get_body(("plain",))
    assert body is not None
    expected = text.replace("\r\n", "\n").replace("\r", "\n")
    assert body.get_content().replace("\r\n", "\n").rstrip() == expected.rstrip()


async def test_a_20_mb_body_over_the_configured_limit_is_dead_and_never_sent(
    amqp_url: str,
    queue_name: str,
    smtp_server: FaultySMTPServer,
    engine_factory: Make,
    running: Start,
) -> None:
    settings = engine_factory(smtp_server.port, smtp={"max_message_size": 16 * MiB})
    engine = await running(settings)
    text = "twenty megabytes of lines\n" * (20 * MiB // 26)
    await publish_raw(amqp_url, queue_name, [job(text=text)])
    await wait_for_statuses(engine.db, {"dead": 1}, timeout=60)
    [row] = await dead_rows(engine)
    assert (row.last_error or "").startswith("cannot be rendered: message is ")
    assert f"over the {16 * MiB}-byte limit" in (row.last_error or "")
    assert smtp_server.received == [] and "mail" not in smtp_server.events


async def test_a_single_20_mb_line_is_sent_in_lines_of_at_most_998_octets(
    amqp_url: str,
    queue_name: str,
    smtp_server: FaultySMTPServer,
    engine_factory: Make,
    running: Start,
) -> None:
    engine = await running(engine_factory(smtp_server.port))
    line = "x" * (20 * MiB)
    await publish_raw(amqp_url, queue_name, [job(text=line)])
    await wait_for_statuses(engine.db, {"sent": 1}, timeout=60)
    [got] = smtp_server.received
    assert not got.bare_crlf
    assert max(len(x) for x in got.data.split(b"\r\n")) <= 998
    message = email.message_from_bytes(got.data, policy=email.policy.default)
    body = message.get_body(("plain",))
    assert body is not None and body.get_content().rstrip("\r\n") == line


@pytest.mark.parametrize("smtputf8", [True, False], ids=["smtputf8", "ascii-relay"])
async def test_idn_domains_and_utf8_local_parts(
    smtputf8: bool,
    amqp_url: str,
    queue_name: str,
    make_smtp_server: MakeServer,
    engine_factory: Make,
    running: Start,
) -> None:
    server = make_smtp_server(smtputf8=smtputf8)
    engine = await running(engine_factory(server.port))
    await engine.pool.probe()  # learn what the relay offers before the first render
    idn = job(id="idn", to="user@bücher.example")
    local = job(id="local", to="jörg@example.com")
    await publish_raw(amqp_url, queue_name, [idn, local])
    expected = {"sent": 2} if smtputf8 else {"sent": 1, "dead": 1}
    await wait_for_statuses(engine.db, expected)
    rcpts = sorted(r for m in server.received for r in m.recipients)
    if smtputf8:
        # An IDN domain alone is punycoded (any relay takes it); a UTF-8 local
        # part has no ASCII form and needs SMTPUTF8.
        assert rcpts == ["jörg@example.com", "user@xn--bcher-kva.example"]
        options = {m.recipients[0]: m.mail_options for m in server.received}
        assert "SMTPUTF8" in options["jörg@example.com"]
        assert "SMTPUTF8" not in options["user@xn--bcher-kva.example"]
    else:
        assert rcpts == ["user@xn--bcher-kva.example"]
        [row] = await dead_rows(engine)
        assert row.idempotency_key == "local"
        assert "SMTPUTF8" in (row.last_error or ""), row.last_error
        assert not any(m.mail_options for m in server.received)


async def test_templates_missing_variables_and_injection_attempts(
    amqp_url: str,
    queue_name: str,
    smtp_server: FaultySMTPServer,
    engine_factory: Make,
    running: Start,
    tmp_path: Path,
) -> None:
    canary = tmp_path / "CANARY"
    evil = f"{{{{ cycler.__init__.__globals__.os.popen('touch {canary}').read() }}}}"
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "welcome.txt").write_text("Hi {{ name }}\n")
    (templates / "needs.txt").write_text("Hi {{ user.name }}, {{ missing }}\n")
    (templates / "evil.txt").write_text(evil + "\n")
    (templates / "attr.txt").write_text(
        "{{ ''.__class__.__mro__[1].__subclasses__() }}"
    )
    engine = await running(engine_factory(smtp_server.port, templates_dir=templates))
    jobs = [
        job(id="missing", template="needs", context={"user": {"name": "B"}}),
        job(id="evil-template", template="evil"),
        job(id="attr-template", template="attr"),
        job(id="evil-variable", template="welcome", context={"name": evil}),
        job(id="evil-text", subject=evil, text=evil, html=f"<p>{evil}</p>"),
    ]
    await publish_raw(amqp_url, queue_name, jobs)
    await wait_for_statuses(engine.db, {"dead": 3, "sent": 2})
    reasons = {r.idempotency_key: r.last_error or "" for r in await dead_rows(engine)}
    assert "'missing' is undefined" in reasons["missing"], reasons
    assert reasons["missing"].startswith("cannot be rendered: template 'needs.txt'")
    assert "unsafe" in reasons["evil-template"], reasons
    assert "unsafe" in reasons["attr-template"], reasons
    by_key = {m.job_key or m.message_id: m for m in smtp_server.received}
    assert len(smtp_server.received) == 2, by_key
    for got in smtp_server.received:
        message = email.message_from_bytes(got.data, policy=email.policy.default)
        body = message.get_body(("plain",))
        assert body is not None and "cycler.__init__" in body.get_content()
    assert not canary.exists(), "template injection ran code"
