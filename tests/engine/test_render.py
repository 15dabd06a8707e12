"""render: MIME structure, header encoding, envelopes, smuggling-proof bytes,
templates."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import re
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from email.message import EmailMessage
from pathlib import Path
from typing import Any, cast

import aiosmtplib
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session

from mailconsole.engine.render import RenderedMessage, Renderer, RenderError
from mailconsole.engine.wire import Address, Attachment, MailJob, WireError, parse_job

DATE = datetime(2024, 3, 1, 9, 30, tzinfo=UTC)
MiB = 1024 * 1024


def make_job(**fields: Any) -> MailJob:
    """A job parsed from the extended format, so it is exactly what the engine sees."""
    obj: dict[str, Any] = {
        "from": "Shop <shop@example.com>",
        "to": "Bob <bob@example.org>",
        "subject": "Hello",
        "text": "Hi Bob\n",
    }
    obj.update(fields)
    return parse_job(
        json.dumps({k: v for k, v in obj.items() if v is not None}).encode()
    )


@pytest.fixture
def renderer() -> Renderer:
    return Renderer(
        templates_dir=None, message_id_domain="mx.example.com", max_size=MiB
    )


@pytest.fixture
def templated(tmp_path: Path) -> Callable[..., Renderer]:
    """Write ``{file name: source}`` into a templates dir; return a renderer over it."""

    def make(**files: str) -> Renderer:
        for name, source in files.items():
            path = tmp_path / "templates" / name.replace("__", "/")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(source, encoding="utf-8")
        (tmp_path / "templates").mkdir(exist_ok=True)
        return Renderer(
            templates_dir=tmp_path / "templates",
            message_id_domain="mx.example.com",
            max_size=MiB,
        )

    return make


def render(renderer: Renderer, job: MailJob, **kwargs: Any) -> RenderedMessage:
    out = renderer.render(
        job, message_id=kwargs.pop("message_id", "m-1"), date=DATE, **kwargs
    )
    assert_wire_safe(out.data)
    return out


def assert_wire_safe(data: bytes) -> None:
    """CRLF line ends only, no bare CR or LF, no line over 998 octets."""
    assert data.endswith(b"\r\n")
    assert data.count(b"\r") == data.count(b"\r\n") == data.count(b"\n")
    assert max(len(line) for line in data.split(b"\r\n")) <= 998


def parsed(data: bytes) -> EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)


def header_block(data: bytes) -> str:
    return data.split(b"\r\n\r\n", 1)[0].decode("utf-8")


def body_of(message: EmailMessage, subtype: str) -> str:
    part = message.get_body((subtype,))
    assert part is not None
    return cast(str, part.get_content())


# -- structure ---------------------------------------------------------------------


def test_text_only(renderer: Renderer) -> None:
    out = render(renderer, make_job())
    message = parsed(out.data)
    assert message.get_content_type() == "text/plain"
    assert message.get_content_charset() == "utf-8"
    assert message["Content-Transfer-Encoding"] == "7bit"
    assert message.get_content() == "Hi Bob\r\n"
    assert message["From"] == "Shop <shop@example.com>"
    assert message["To"] == "Bob <bob@example.org>"
    assert message["Subject"] == "Hello"
    assert message["MIME-Version"] == "1.0"
    assert message["Date"] == "Fri, 01 Mar 2024 09:30:00 +0000"
    assert not message.defects
    assert out.envelope_from == "shop@example.com"
    assert out.recipients == ("bob@example.org",)
    assert out.smtputf8 is False


def test_html_only(renderer: Renderer) -> None:
    message = parsed(render(renderer, make_job(text=None, html="<p>Hi</p>")).data)
    assert message.get_content_type() == "text/html"
    assert message.get_content() == "<p>Hi</p>\r\n"


def test_text_and_html_make_an_alternative(renderer: Renderer) -> None:
    message = parsed(render(renderer, make_job(html="<p>Hi</p>")).data)
    assert message.get_content_type() == "multipart/alternative"
    types = [p.get_content_type() for p in message.iter_parts()]
    assert types == ["text/plain", "text/html"]
    assert body_of(message, "html") == "<p>Hi</p>\r\n"


def test_attachments_make_a_mixed_message(renderer: Renderer) -> None:
    job = make_job(
        html="<p>Hi</p>",
        attachments=[
            {
                "filename": "a.pdf",
                "content_type": "application/pdf",
                "content_base64": "AAEC",
            },
            {
                "filename": 'Übersicht März "Q1".csv',
                "content_type": "text/csv",
                "content_base64": "YSxiCg==",
            },
        ],
    )
    message = parsed(render(renderer, job).data)
    assert message.get_content_type() == "multipart/mixed"
    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == [
        "multipart/alternative",
        "application/pdf",
        "text/csv",
    ]
    attachments = list(message.iter_attachments())
    assert [a.get_filename() for a in attachments] == [
        "a.pdf",
        'Übersicht März "Q1".csv',
    ]
    assert attachments[0].get_content() == b"\x00\x01\x02"
    assert attachments[1].get_payload(decode=True) == b"a,b\n"
    assert body_of(message, "plain") == "Hi Bob\r\n"


def test_long_non_ascii_file_name_uses_rfc2231_continuations(
    renderer: Renderer,
) -> None:
    name = "Überweisungsbestätigung für März " * 7 + "€.pdf"
    att = Attachment(name[:255], "application/pdf", b"%PDF" * 1000)
    out = render(renderer, MailJob(**{**_fields(make_job()), "attachments": (att,)}))
    (attachment,) = parsed(out.data).iter_attachments()
    assert attachment.get_filename() == name[:255]
    assert attachment.get_content() == b"%PDF" * 1000
    assert b"filename*0*=utf-8''" in out.data


def _fields(job: MailJob) -> dict[str, Any]:
    return {name: getattr(job, name) for name in MailJob.__slots__}


def test_empty_text_is_a_valid_empty_body(renderer: Renderer) -> None:
    message = parsed(render(renderer, make_job(text="")).data)
    assert message.get_content() == ""


# -- headers -----------------------------------------------------------------------


def test_non_ascii_subject_and_names_are_rfc2047_encoded(renderer: Renderer) -> None:
    subject = "Grüße aus München – Ihre Bestellung Nr. 42 ist unterwegs, " * 3
    with pytest.raises(WireError, match="not one address"):
        make_job(to="Doe, J. <j@x.org>")  # unquoted comma: ambiguous, refused
    job = make_job(
        subject=subject.strip(),
        to=[
            {"name": "Zoë Łukasiewicz", "email": "z@example.org"},
            '"Doe, J." <j@x.org>',
        ],
        **{"from": {"name": "Bücherei, Süd", "email": "b@example.com"}},
    )
    out = render(renderer, job)
    head = header_block(out.data)
    assert head.isascii()
    assert "=?utf-8?b?" in head
    assert all(len(line) <= 78 for line in head.split("\r\n"))
    message = parsed(out.data)
    assert message["Subject"] == subject.strip()
    assert message["From"].addresses[0].display_name == "Bücherei, Süd"
    to = message["To"].addresses
    assert [(a.display_name, a.addr_spec) for a in to] == [
        ("Zoë Łukasiewicz", "z@example.org"),
        ("Doe, J.", "j@x.org"),
    ]


def test_idn_domains_are_punycoded_without_smtputf8(renderer: Renderer) -> None:
    job = make_job(to="Jörg <jorg@bücher.de>", cc="info@münchen.de")
    out = render(renderer, job)
    assert out.smtputf8 is False
    assert out.recipients == ("jorg@xn--bcher-kva.de", "info@xn--mnchen-3ya.de")
    message = parsed(out.data)
    assert message["To"].addresses[0].domain == "xn--bcher-kva.de"
    assert message["Cc"] == "info@xn--mnchen-3ya.de"
    assert out.data.isascii()


def test_non_ascii_local_part_needs_smtputf8(renderer: Renderer) -> None:
    job = make_job(to="José <josé@bücher.de>")
    with pytest.raises(
        RenderError,
        match=r"^recipient josé@bücher.de needs SMTPUTF8, which the relay does not"
        r" offer$",
    ):
        renderer.render(job, message_id="m-1", date=DATE)
    out = render(renderer, job, smtputf8_available=True)
    assert out.smtputf8 is True
    assert out.recipients == ("josé@bücher.de",)
    assert "To: José <josé@bücher.de>".encode() not in out.data  # name still encoded
    assert "<josé@bücher.de>".encode() in out.data
    text = out.data.decode(
        "utf-8"
    )  # the stdlib's byte parser cannot read UTF-8 headers
    message = email.message_from_string(text, policy=email.policy.SMTPUTF8)
    assert message["To"].addresses[0].addr_spec == "josé@bücher.de"


def test_smtputf8_is_needed_for_sender_and_header_only_addresses(
    renderer: Renderer,
) -> None:
    with pytest.raises(RenderError, match=r"^sender jörg@example.com needs SMTPUTF8"):
        renderer.render(
            make_job(**{"from": "jörg@example.com"}), message_id="m", date=DATE
        )
    job = make_job(reply_to="jörg@example.com")
    with pytest.raises(RenderError, match=r"^Reply-To address jörg@example.com needs"):
        renderer.render(job, message_id="m", date=DATE)
    assert render(renderer, job, smtputf8_available=True).smtputf8
    plain = render(renderer, make_job(), smtputf8_available=True)
    assert plain.smtputf8 is False  # only used when an address needs it


def test_message_id_is_stable_across_retries(renderer: Renderer) -> None:
    job = make_job()
    first = renderer.render(job, message_id="m-01JD5X", date=DATE)
    later = renderer.render(
        job,
        message_id="m-01JD5X",
        date=DATE + timedelta(hours=1),
        recipients=["bob@example.org"],
    )
    assert first.message_id == later.message_id == "<m-01JD5X@mx.example.com>"
    assert parsed(first.data)["Message-ID"] == "<m-01JD5X@mx.example.com>"
    assert parsed(later.data)["Message-ID"] == first.message_id


def test_date_keeps_its_offset(renderer: Renderer) -> None:
    date = datetime(2024, 3, 1, 10, 30, tzinfo=timezone(timedelta(hours=1)))
    out = renderer.render(make_job(), message_id="m-1", date=date)
    assert parsed(out.data)["Date"].datetime == date


def test_bcc_is_never_in_the_headers(renderer: Renderer) -> None:
    job = make_job(cc="c@example.org", bcc=["secret@example.net", "Hidden <h@x.org>"])
    out = render(renderer, job)
    assert out.recipients == (
        "bob@example.org",
        "c@example.org",
        "secret@example.net",
        "h@x.org",
    )
    assert b"secret" not in out.data and b"Hidden" not in out.data
    assert b"h@x.org" not in out.data
    assert parsed(out.data)["Bcc"] is None


def test_recipients_subset_for_retries(renderer: Renderer) -> None:
    job = make_job(to=["a@example.org", "b@bücher.de"], bcc="c@example.org")
    out = render(renderer, job, recipients=["b@bücher.de"])
    assert out.recipients == ("b@xn--bcher-kva.de",)
    assert parsed(out.data)["To"] == "a@example.org, b@xn--bcher-kva.de"
    with pytest.raises(RenderError, match="no recipients"):
        renderer.render(job, message_id="m", date=DATE, recipients=[])
    with pytest.raises(RenderError, match=r"recipients\[0\]: 'x <a@b.com>'"):
        renderer.render(job, message_id="m", date=DATE, recipients=["x <a@b.com>"])


def test_many_recipients_fold_between_addresses(renderer: Renderer) -> None:
    addresses = [f"User Number {i} <user{i}@example.org>" for i in range(200)]
    out = render(renderer, make_job(to=addresses))
    head = header_block(out.data)
    assert all(len(line) <= 78 for line in head.split("\r\n"))
    assert len(parsed(out.data)["To"].addresses) == 200


def test_extra_headers_are_written_as_given(renderer: Renderer) -> None:
    url = "<https://example.com/unsubscribe?token=" + "a1" * 150 + ">"
    job = make_job(
        headers={
            "List-Unsubscribe": url,
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            "X-Note": "Grüße",
            "X-Long": " ".join(["word"] * 100),
        }
    )
    out = render(renderer, job)
    message = parsed(out.data)
    assert f"\r\nList-Unsubscribe: {url}\r\n".encode() in out.data  # not encoded
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["X-Note"] == "Grüße"
    assert message["X-Long"] == " ".join(["word"] * 100)


@pytest.mark.parametrize(
    "fields",
    [
        {"subject": "hi\r\nBcc: victim@example.com"},
        {"subject": "hi=?UTF-8?Q?=0A?=Bcc: victim@example.com"},
        {"subject": "hi\nBcc: victim@example.com"},
        {"headers": {"X-A": "v\r\nBcc: victim@example.com"}},
        {"headers": {"X-A": "=?utf-8?b?DQpCY2M6IHZAeA==?="}},
        {"headers": {"Bcc": "victim@example.com"}},
        {"headers": {"X-A\r\nBcc": "victim@example.com"}},
        {"headers": {"Content-Type": "text/html"}},
        {"to": (Address("bob@example.org", "Bob\r\nBcc: victim@example.com"),)},
        {"to": (Address("bob@example.org", "=?UTF-8?Q?=0A?=Bcc: v@x"),)},
        {"sender": Address("a@example.org\r\nBcc: victim@example.com")},
        {"attachments": (Attachment("a\r\nBcc: v@x", "text/plain", b""),)},
        {"attachments": (Attachment("a.txt", "text/plain\r\nBcc: v@x", b""),)},
    ],
)
def test_header_injection_in_a_hand_built_job_is_refused(
    renderer: Renderer, fields: dict[str, Any]
) -> None:
    job = MailJob(**{**_fields(make_job()), **fields})
    with pytest.raises(RenderError):
        renderer.render(
            job, message_id="m-1", date=DATE, recipients=["bob@example.org"]
        )


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"message_id": "m 1"}, "is not a dot-atom"),
        ({"message_id": "m-1>\r\nBcc: x"}, "is not a dot-atom"),
        ({"date": datetime(2024, 1, 1)}, "timezone-aware"),
    ],
)
def test_caller_bugs_are_value_errors(
    renderer: Renderer, kwargs: dict[str, Any], expected: str
) -> None:
    arguments: dict[str, Any] = {"message_id": "m-1", "date": DATE, **kwargs}
    with pytest.raises(ValueError, match=expected) as info:
        renderer.render(make_job(), **arguments)
    assert not isinstance(info.value, RenderError)


# -- bodies: SMTP smuggling, long lines, sizes -------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "a\n.\nb",
        "a\r.\rb",
        "a\r\n.\r\nb",
        "\r\n.\r\n",
        "x\r\n.\r\nMAIL FROM:<evil@x>\r\n",
        "mixed\r\rline\n\rends\n\n",
        "ünïcödé\n.\nlines\r.\r",
        "\x00nul and \x1b escape\n",
        "trailing spaces   \n\tand tabs\t\n",
    ],
)
def test_smuggling_bodies_come_out_with_crlf_only(
    renderer: Renderer, text: str
) -> None:
    for job in (make_job(text=text), make_job(text=None, html=text)):
        out = render(renderer, job)
        message = parsed(out.data)
        subtype = "plain" if job.text is not None else "html"
        expected = text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\r\n")
        assert body_of(message, subtype).rstrip("\r\n") == expected.rstrip("\r\n")


def test_a_20_mb_single_line_is_encoded_into_short_lines() -> None:
    renderer = Renderer(
        templates_dir=None, message_id_domain="mx.example.com", max_size=64 * MiB
    )
    for text in ("x" * (20 * MiB), "é" * (10 * MiB)):
        out = render(renderer, MailJob(**{**_fields(make_job()), "text": text}))
        assert max(len(line) for line in out.data.split(b"\r\n")) <= 76
        assert parsed(out.data)["Content-Transfer-Encoding"] in (
            "quoted-printable",
            "base64",
        )


def test_bodies_choose_7bit_qp_or_base64(renderer: Renderer) -> None:
    def cte(text: str) -> str:
        return str(
            parsed(render(renderer, make_job(text=text)).data)[
                "Content-Transfer-Encoding"
            ]
        )

    assert cte("short ascii lines\nonly\n") == "7bit"
    assert cte("a" * 79) == "quoted-printable"
    assert cte("mostly ascii with one ü\n") == "quoted-printable"
    assert cte("Привет, как дела? Всё хорошо.\n") == "base64"


def test_size_limit(tmp_path: Path) -> None:
    small = Renderer(
        templates_dir=None, message_id_domain="mx.example.com", max_size=2000
    )
    render(small, make_job(text="x" * 1000))
    with pytest.raises(
        RenderError, match=r"^message is \d+ bytes, over the 2000-byte limit$"
    ):
        small.render(make_job(text="x" * 1900), message_id="m", date=DATE)
    with pytest.raises(
        RenderError, match=r"^message is at least \d+ bytes, over the 2000"
    ):
        small.render(make_job(text="x" * 5000), message_id="m", date=DATE)


def test_delivered_bytes_equal_rendered_bytes_through_a_real_smtp_server(
    renderer: Renderer,
) -> None:
    """aiosmtplib dot-stuffs and aiosmtpd un-stuffs: '.' lines survive, nothing ends
    early, and the server receives exactly ``data``."""
    received: list[Envelope] = []

    class Recorder:
        async def handle_DATA(
            self, server: SMTPServer, session: Session, envelope: Envelope
        ) -> str:
            received.append(envelope)
            return "250 OK"

    job = make_job(
        text="a\n.\nb\r\n.\r\nMAIL FROM:<evil@x>\r\n.\n", bcc="c@example.net"
    )
    out = render(renderer, job)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(Recorder(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        asyncio.run(_send(out, "127.0.0.1", port))
    finally:
        controller.stop()
    (envelope,) = received
    assert envelope.mail_from == "shop@example.com"
    assert envelope.rcpt_tos == ["bob@example.org", "c@example.net"]
    assert envelope.original_content == out.data


async def _send(out: RenderedMessage, host: str, port: int) -> None:
    async with aiosmtplib.SMTP(hostname=host, port=port, start_tls=False) as client:
        errors, _ = await client.sendmail(out.envelope_from, out.recipients, out.data)
        assert errors == {}


# -- templates ---------------------------------------------------------------------


def test_template_renders_subject_text_and_html(
    templated: Callable[..., Renderer],
) -> None:
    renderer = templated(
        **{
            "welcome.subject.txt": "Welcome, {{ user.name }}!\n",
            "welcome.txt": "Hi {{ user.name }} & co, {{ items|length }} items\n",
            "welcome.html": (
                "<p>Hi {{ user.name }}</p>{% for i in items %}<li>{{ i }}{% endfor %}"
            ),
        }
    )
    job = make_job(
        text=None,
        subject="ignored",
        template="welcome",
        context={"user": {"name": "<Bob>"}, "items": ["<b>x</b>", "y"]},
    )
    message = parsed(render(renderer, job).data)
    assert message["Subject"] == "Welcome, <Bob>!"
    assert body_of(message, "plain") == "Hi <Bob> & co, 2 items\r\n"
    html = body_of(message, "html")
    assert "<p>Hi &lt;Bob&gt;</p>" in html  # autoescaped in .html
    assert "<li>&lt;b&gt;x&lt;/b&gt;" in html


def test_template_in_a_subdirectory_with_html_only_keeps_job_text(
    templated: Callable[..., Renderer],
) -> None:
    renderer = templated(**{"orders__shipped.html": "<p>{{ n }} shipped</p>"})
    job = make_job(template="orders/shipped", context={"n": 3}, text="plain fallback")
    message = parsed(render(renderer, job).data)
    assert message["Subject"] == "Hello"
    assert body_of(message, "html") == "<p>3 shipped</p>\r\n"
    assert body_of(message, "plain") == "plain fallback\r\n"


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"w.txt": "Hi {{ user }}"}, r"^template 'w.txt': 'user' is undefined$"),
        (
            {"w.html": "{{ a.b.c }}"},
            r"^template 'w.html': 'dict object' has no attribute 'b'",
        ),
        ({"w.txt": "{% if %}"}, r"^template 'w.txt' line 1: "),
        ({"w.txt": "{% include 'missing.txt' %}"}, r"included template 'missing.txt'"),
        ({"w.txt": "{{ 1 / 0 }}"}, r"^template 'w.txt': ZeroDivisionError: "),
        (
            {"w.txt": "{{ items.append(1) }}"},
            r"^template 'w.txt': refused by the sandbox",
        ),
        ({"other.txt": "x"}, r"^template 'w': neither w.txt nor w.html exists$"),
        (
            {"w.subject.txt": "Hi\n{{ 'x' }}\nBcc: v@x", "w.txt": "x"},
            r"^template 'w.subject.txt': contains a line feed",
        ),
        (
            {"w.subject.txt": "{{ s }}", "w.txt": "x"},
            r"^template 'w.subject.txt': contains a control character in an RFC 2047",
        ),
    ],
)
def test_template_errors_name_the_template(
    templated: Callable[..., Renderer], files: dict[str, str], expected: str
) -> None:
    renderer = templated(**files)
    job = make_job(
        template="w", context={"a": {}, "items": [], "s": "=?UTF-8?Q?=0A?=Bcc: v@x"}
    )
    with pytest.raises(RenderError, match=expected) as info:
        renderer.render(job, message_id="m-1", date=DATE)
    assert "\n" not in str(info.value)


def test_sandbox_blocks_code_execution(
    templated: Callable[..., Renderer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    canary = tmp_path / "CANARY"
    renderer = templated(
        **{
            "evil.txt": (
                "{{ cycler.__init__.__globals__.os.popen('touch CANARY').read() }}"
            )
        }
    )
    with pytest.raises(RenderError, match=r"^template 'evil.txt': .*unsafe"):
        renderer.render(make_job(template="evil"), message_id="m-1", date=DATE)
    assert not canary.exists()


def test_job_text_is_never_a_template(templated: Callable[..., Renderer]) -> None:
    renderer = templated(**{"w.txt": "{{ x }}"})
    job = make_job(
        text="{{ 7*7 }} {% raw %}", html="<p>{{ cycler }}</p>", subject="{{ 7*7 }}"
    )
    message = parsed(render(renderer, job).data)
    assert body_of(message, "plain") == "{{ 7*7 }} {% raw %}\r\n"
    assert body_of(message, "html") == "<p>{{ cycler }}</p>\r\n"
    assert message["Subject"] == "{{ 7*7 }}"
    templated_job = make_job(template="w", context={"x": "{{ 7*7 }}"})
    assert (
        body_of(parsed(render(renderer, templated_job).data), "plain")
        == "{{ 7*7 }}\r\n"
    )


def test_template_without_a_templates_dir(renderer: Renderer) -> None:
    with pytest.raises(RenderError, match="no templates directory is configured"):
        renderer.render(make_job(template="welcome"), message_id="m-1", date=DATE)


def test_renderer_refuses_a_bad_message_id_domain() -> None:
    with pytest.raises(ValueError, match="is not a host name"):
        Renderer(templates_dir=None, message_id_domain="a b", max_size=10)
    assert re.fullmatch(
        r"<m@xn--bcher-kva\.de>",
        Renderer(templates_dir=None, message_id_domain="bücher.de", max_size=MiB)
        .render(make_job(), message_id="m", date=DATE)
        .message_id,
    )
