"""wire: both payload formats, every refusal reason, round trips and the schema file."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

from mailconsole.engine.wire import (
    MAX_BODY_BYTES,
    Address,
    Attachment,
    MailJob,
    WireError,
    check_header_value,
    parse_address,
    parse_email,
    parse_job,
    schema,
)

ROOT = Path(__file__).resolve().parents[2]

# Exactly what the .NET producers' System.Text.Json serializer writes (PascalCase,
# nulls kept, no whitespace).
DOTNET_BODY = (
    b'{"SenderName":"Shop","SenderEmail":"noreply@shop.example",'
    b'"RecipientName":null,"RecipientEmail":"Bob@Example.COM",'
    b'"Subject":"Your order #42","Content":"<html><body><p>Thanks!</p></body></html>"}'
)

FULL: dict[str, Any] = {
    "id": "order-42-shipped",
    "from": "Shop <noreply@shop.example>",
    "to": ["Bob <bob@example.com>", {"name": "Ann", "email": "ann@example.org"}],
    "cc": "carol@example.net",
    "bcc": [{"email": "audit@shop.example"}],
    "reply_to": '"Support, Shop" <help@shop.example>',
    "subject": "Your order has shipped",
    "text": "Hello\n",
    "html": "<p>Hello</p>",
    "template": "orders/shipped",
    "context": {"order": {"id": 42, "items": [1.5, None, True, "x"]}},
    "headers": {"X-Campaign": "autumn", "List-Unsubscribe": "<https://x.example/u>"},
    "attachments": [
        {
            "filename": "invoice.pdf",
            "content_type": "Application/PDF",
            "content_base64": base64.b64encode(b"%PDF-1.7 ...").decode(),
        }
    ],
    "send_at": "2030-05-01T12:00:00+02:00",
    "priority": -3,
}


def job_bytes(**fields: Any) -> bytes:
    """A minimal valid extended job with ``fields`` replaced (None removes a key)."""
    obj: dict[str, Any] = {"from": "a@example.com", "to": "b@example.com", "text": "hi"}
    obj.update(fields)
    return json.dumps({k: v for k, v in obj.items() if v is not None}).encode()


def short_id(value: object) -> str:
    """Test ids from the expected reason; payloads are too long to show."""
    return value[:60] if isinstance(value, str) else "-"


def reason(body: bytes, **kwargs: Any) -> str:
    with pytest.raises(WireError) as info:
        parse_job(body, **kwargs)
    text = str(info.value)
    assert "\n" not in text and "\r" not in text
    text.encode("utf-8")  # always storable
    return text


# -- the .NET format ---------------------------------------------------------------


def test_dotnet_object_as_serialized() -> None:
    job = parse_job(DOTNET_BODY)
    assert job.source_format == "dotnet"
    assert job.sender == Address("noreply@shop.example", "Shop")
    assert job.to == (Address("Bob@example.com", ""),)
    assert job.subject == "Your order #42"
    assert job.html == "<html><body><p>Thanks!</p></body></html>"
    assert job.text is None
    assert job.envelope_recipients() == ("Bob@example.com",)


def test_dotnet_object_cannot_carry_extended_fields() -> None:
    body = json.loads(DOTNET_BODY) | {"bcc": "audit@example.com"}
    assert reason(json.dumps(body).encode()) == (
        "'bcc' is not a .NET field: extended-format fields cannot be mixed in"
    )


def test_dotnet_extra_fields_are_ignored_and_plain_content_is_text() -> None:
    body = {
        "$type": "MailDto",
        "Id": 7,
        "SenderName": "",
        "SenderEmail": "a@example.com",
        "RecipientEmail": "b@example.com",
        "Subject": "s",
        "Content": "Use <br> for line breaks",
    }
    job = parse_job(json.dumps(body).encode())
    assert job.text == "Use <br> for line breaks"
    assert job.html is None
    assert job.sender.name == ""


@pytest.mark.parametrize(
    ("content", "is_html"),
    [
        ("<p>hi</p>", True),
        ("  \n<!DOCTYPE html><html><body>x</body></html>", True),
        ("<div>x</div>", True),
        ("<TABLE><tr><td>1</td></tr></TABLE>", True),
        ("<b>bold</b> only", False),
        ("hello <p>", False),
        ("", False),
        ("<pre>code</pre>", False),
    ],
)
def test_dotnet_html_heuristic(content: str, is_html: bool) -> None:
    body = {
        "SenderEmail": "a@example.com",
        "RecipientEmail": "b@example.com",
        "Subject": "s",
        "Content": content,
    }
    job = parse_job(json.dumps(body).encode())
    assert (job.html == content) is is_html
    assert (job.text == content) is not is_html


# -- the extended format -----------------------------------------------------------


def test_extended_with_everything() -> None:
    job = parse_job(json.dumps(FULL).encode())
    assert job.source_format == "extended"
    assert job.idempotency_key == "order-42-shipped"
    assert job.sender == Address("noreply@shop.example", "Shop")
    assert job.to == (
        Address("bob@example.com", "Bob"),
        Address("ann@example.org", "Ann"),
    )
    assert job.cc == (Address("carol@example.net"),)
    assert job.bcc == (Address("audit@shop.example"),)
    assert job.reply_to == (Address("help@shop.example", "Support, Shop"),)
    assert job.template == "orders/shipped"
    assert job.context == FULL["context"]
    assert job.headers == FULL["headers"]
    assert job.attachments == (
        Attachment("invoice.pdf", "application/pdf", b"%PDF-1.7 ..."),
    )
    assert job.send_at == datetime(2030, 5, 1, 10, 0, tzinfo=UTC)
    assert job.send_at is not None and job.send_at.tzinfo is UTC
    assert job.priority == -3
    assert job.envelope_recipients() == (
        "bob@example.com",
        "ann@example.org",
        "carol@example.net",
        "audit@shop.example",
    )


def test_null_means_absent() -> None:
    job = parse_job(
        job_bytes(cc=[], subject="s")[:-1]
        + b', "bcc": null, "html": null, "context": null, "priority": null}'
    )
    assert job.bcc == () and job.html is None and job.context == {}
    assert job.priority == 0


def test_envelope_recipients_drop_case_insensitive_duplicates() -> None:
    job = parse_job(job_bytes(to=["X@a.com", "y@a.com"], cc="x@A.com", bcc="Y@a.com"))
    assert job.envelope_recipients() == ("X@a.com", "y@a.com")


def test_to_json_round_trip() -> None:
    job = parse_job(json.dumps(FULL).encode())
    again = parse_job(json.dumps(job.to_json()).encode())
    assert again == job


def test_to_json_keeps_only_non_default_keys() -> None:
    job = parse_job(job_bytes(text=""))
    assert job.to_json() == {
        "from": "a@example.com",
        "to": ["b@example.com"],
        "text": "",
    }


def test_dotnet_round_trips_as_extended() -> None:
    job = parse_job(DOTNET_BODY)
    again = parse_job(json.dumps(job.to_json()).encode())
    assert again.source_format == "extended"
    assert again == MailJob(**{**_fields(job), "source_format": "extended"})


def _fields(job: MailJob) -> dict[str, Any]:
    return {name: getattr(job, name) for name in MailJob.__slots__}


# -- addresses ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a@b.com", Address("a@b.com")),
        ("  <a@B.COM>  ", Address("a@b.com")),
        ("Bob Smith <bob@x.org>", Address("bob@x.org", "Bob Smith")),
        ('"Smith, Bob \\"B\\"" <bob@x.org>', Address("bob@x.org", 'Smith, Bob "B"')),
        ({"name": None, "email": "a@b.com"}, Address("a@b.com")),
        ({"name": " Zoë ", "email": "z@b.com"}, Address("z@b.com", "Zoë")),
        ("o'hara+tag@sub.example-1.com", Address("o'hara+tag@sub.example-1.com")),
        ('"john.doe"@example.com', Address('"john.doe"@example.com')),
        ("bob@BÜCHER.de", Address("bob@bücher.de")),
        ("jörg@example.com", Address("jörg@example.com")),
        ("a@localhost", Address("a@localhost")),
    ],
)
def test_parse_address_accepts(value: object, expected: Address) -> None:
    assert parse_address(value, field="to") == expected


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("bob@", "empty domain"),
        ("@x.com", "empty local part"),
        ("a@@b.com", "exactly one '@'"),
        ("a@b@c.com", "exactly one '@'"),
        ("a b@c.com", "whitespace"),
        ("a@b.com\r\nBcc: x@y.com", "carriage return"),
        ("a\x00@b.com", "NUL"),
        ("a,b@c.com", "','"),
        ("a@-b.com", "hyphens"),
        ("a..b@c.com", "dot-atom"),
        (".a@c.com", "dot-atom"),
        ("a@b..com", "labels"),
        ("a@" + "ü" * 70 + ".com", "not a valid internationalised domain"),
        ("a@1.2.3.4", "IP addresses"),
        ("a@[127.0.0.1]", "domain"),
        ("x" * 65 + "@b.com", "64 octets"),
        ("a@" + "b" * 250 + ".com", "254"),
        ("a@faß.de", "xn-- form"),
        ('"a b"@c.com', "whitespace"),
        ("x <a@b.com>, y <c@d.com>", "not one address"),
        ("Smith, Bob <bob@x.org>", "not one address"),
        ("Bob <bob@x.org", "not a valid address"),
        ("=?utf-8?q?=0A?=@x.com", "encoded word"),
        ("=?UTF-8?B?DQpCY2M6IHhAeQ==?= <a@x.com>", "encoded word"),
        (5, "expected an address"),
    ],
)
def test_parse_address_refuses(value: object, why: str) -> None:
    with pytest.raises(WireError, match=r"^to: ") as info:
        parse_address(value, field="to")
    assert why in str(info.value)


def test_address_flags_and_display() -> None:
    assert Address("jörg@example.com").needs_smtputf8
    assert not Address("bob@bücher.de").needs_smtputf8
    assert Address("a@b.com", "Doe, John").formatted() == '"Doe, John" <a@b.com>'
    assert Address("a@b.com", "Ann").formatted() == "Ann <a@b.com>"
    assert Address("a@b.com").formatted() == "a@b.com"


def test_parse_email_is_bare_only() -> None:
    assert parse_email("A@EXAMPLE.com", field="x") == "A@example.com"
    with pytest.raises(WireError, match=r"^x: 'Bob <a@b.com>' is not a valid address"):
        parse_email("Bob <a@b.com>", field="x")


# -- header injection --------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "hi\r\nBcc: x@y",
        "hi\nBcc: x@y",
        "hi\rBcc: x@y",
        "hi\x00",
        "hi\x1b[2J",
        "hi\x85Bcc: x@y",
        "hi\u2028Bcc: x@y",
        "hi=?UTF-8?Q?=0A?=Bcc: x@y",
        "hi =?utf-8?q?=0d=0aBcc:_x@y?= there",
        "=?utf-8?b?Cg==?=Bcc: x@y",
        "=?utf-8?b?Cg?=Bcc: x@y",  # missing padding: the stdlib still decodes it
        "=?utf-8?B?aGkKQmNjOiB4QHk=?=",
        "=?iso-8859-1*en?Q?=0A?=",
        "=?utf-7?q?+AAo-?=Bcc: x@y",
        "=?utf-8?q?=3D=3Futf-8=3Fq=3F=3D0A=3F=3D?=",  # an encoded encoded word
    ],
)
def test_check_header_value_refuses_line_breaks_and_controls(value: str) -> None:
    with pytest.raises(WireError, match=r"^Subject: contains"):
        check_header_value("Subject", value)


@pytest.mark.parametrize(
    "value",
    ["", "plain", "tab\tinside", "Grüße", "=?utf-8?q?Gr=C3=BC=C3=9Fe?=", "50% =? off"],
)
def test_check_header_value_accepts(value: str) -> None:
    check_header_value("Subject", value)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (job_bytes(subject="hi=?UTF-8?Q?=0A?=Bcc: x@y"), "subject: contains a control"),
        (job_bytes(subject="hi\r\nBcc: x@y"), "subject: contains a carriage return"),
        (
            job_bytes(**{"from": "Evil\nBcc: x@y <a@b.com>"}),
            "from: contains a line feed",
        ),
        (job_bytes(to=[{"name": "=?utf-8?q?=0A?=", "email": "a@b.com"}]), "to[0].name"),
        (job_bytes(headers={"X-A": "v\r\nBcc: x@y"}), "headers.X-A: contains"),
        (
            job_bytes(headers={"X-A": "=?UTF-8?Q?=0A?=Bcc: x@y"}),
            "headers.X-A: contains",
        ),
        (job_bytes(headers={"X-A\r\nBcc": "v"}), "'X-A\\r\\nBcc' is not a header"),
        (job_bytes(headers={"Bcc": "x@y"}), "headers.Bcc: may not be set"),
        (job_bytes(headers={"content-type": "x"}), "may not be set"),
        (job_bytes(headers={"X-A": "1", "x-a": "2"}), "duplicate header"),
        (
            json.dumps(
                {
                    "SenderEmail": "a@b.com",
                    "RecipientEmail": "c@d.com",
                    "RecipientName": "Bob\r\nBcc: x@y",
                    "Subject": "s",
                    "Content": "x",
                }
            ).encode(),
            "RecipientName: contains a carriage return",
        ),
        (
            json.dumps(
                {
                    "SenderEmail": "a@b.com",
                    "RecipientEmail": "c@d.com",
                    "Subject": "=?UTF-8?Q?=0A?=Bcc: x@y",
                    "Content": "x",
                }
            ).encode(),
            "Subject: contains a control",
        ),
    ],
    ids=short_id,
)
def test_injection_is_refused_in_every_header_field(body: bytes, expected: str) -> None:
    assert expected in reason(body)


# -- refusal reasons ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"", "not valid JSON: Expecting value at line 1 column 1"),
        (b"{", "not valid JSON: Expecting property name"),
        (b"\xff\xfe\x00junk", "not UTF-8: invalid start byte at byte 0"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "not UTF-8"),
        (b"\x00\x01\x02", "not valid JSON"),
        (b"[1, 2]", "payload must be a JSON object, got array"),
        (b'"x"', "payload must be a JSON object, got string"),
        (b'{"a": NaN}', "NaN is not a JSON number"),
        (b'{"a": -Infinity}', "-Infinity is not a JSON number"),
        (b'{"a": 1e400}', "out of range"),
        (b'{"a": ' + b"9" * 5000 + b"}", "not valid JSON"),
        (b'{"a": 1, "a": 2}', "duplicate key 'a'"),
        (b'{"text": "\\ud800"}', "invalid Unicode (lone surrogate) in text"),
        (
            b'{"from":"a@b.com","to":"c@d.com","text":"x","context":{"k":["\\udfff"]}}',
            "invalid Unicode (lone surrogate) in context.k[0]",
        ),
        (b'{"\\udc80": 1}', "invalid Unicode (lone surrogate) in a key of the payload"),
        (b"{}", "from: required field is missing"),
        (job_bytes(to=None), "to: required field is missing"),
        (job_bytes(text=None), "one of 'text', 'html' or 'template' is required"),
        (job_bytes(text=5), "text: expected string or null, got integer"),
        (job_bytes(to=[]), "to: must not be empty"),
        (job_bytes(to=5), "to: expected an address or a non-empty list"),
        (job_bytes(to=["bob@"]), "to[0]: 'bob@' is not a valid address"),
        (job_bytes(to=[{"name": "x"}]), "to[0].email: required field is missing"),
        (job_bytes(to=[{"email": "a@b.com", "x": 1}]), "to[0]: unknown field 'x'"),
        (
            job_bytes(to=["a@b.com"] * 1001),
            "to: has 1001 items, over the limit of 1000",
        ),
        (
            job_bytes(to=["a@b.com"] * 600, cc=["c@b.com"] * 401),
            "to+cc+bcc: 1001 recipients, over the limit of 1000",
        ),
        (job_bytes(cc=5), "cc: expected null, an address or a list of addresses"),
        (job_bytes(extra=1), "unknown field 'extra'"),
        (job_bytes(SenderEmai="x"), "unknown field 'SenderEmai'"),
        (job_bytes(id=""), "id: must not be empty"),
        (job_bytes(id="x" * 201), "id: is 201 characters long, over the limit of 200"),
        (job_bytes(id="a\u202eb"), "id: contains control"),
        (job_bytes(priority=11), "priority: 11 is over the maximum of 10"),
        (job_bytes(priority=True), "priority: expected integer or null, got boolean"),
        (job_bytes(priority=1.5), "priority: expected integer or null, got number"),
        (job_bytes(template="../etc/passwd"), "template: '../etc/passwd' is not"),
        (job_bytes(template="a\n"), "template: 'a\\n' is not a valid template name"),
        (job_bytes(context=[]), "context: expected object or null, got array"),
        (job_bytes(headers={"Bad Name": "x"}), "headers: 'Bad Name' is not a header"),
        (job_bytes(headers={"X-A": 5}), "headers.X-A: expected string, got integer"),
        (
            job_bytes(send_at="2030-01-01T10:00:00"),
            "send_at: '2030-01-01T10:00:00' has",
        ),
        (job_bytes(send_at="2030-01-01"), "has no UTC offset"),
        (job_bytes(send_at="tomorrow"), "send_at: 'tomorrow' is not an ISO-8601"),
        (job_bytes(send_at="0001-01-01T00:00:00+01:00"), "send_at: '0001-01-01T0"),
        (
            json.dumps(
                {"SenderEmail": "a@b.com", "RecipientEmail": "bob@", "Subject": "s"}
            ).encode(),
            "Content: required field is missing",
        ),
        (
            json.dumps(
                {
                    "SenderEmail": "a@b.com",
                    "RecipientEmail": "bob@",
                    "Subject": "s",
                    "Content": "x",
                }
            ).encode(),
            "RecipientEmail: 'bob@' is not a valid address",
        ),
        (
            json.dumps(
                {"RecipientEmail": "b@c.com", "Subject": None, "Content": "x"}
            ).encode(),
            "SenderEmail: required field is missing",
        ),
        (
            json.dumps(
                {
                    "SenderEmail": "a@b.com",
                    "RecipientEmail": "b@c.com",
                    "Subject": None,
                    "Content": "x",
                }
            ).encode(),
            "Subject: expected string, got null",
        ),
    ],
    ids=short_id,
)
def test_refusal_reasons(body: bytes, expected: str) -> None:
    assert expected in reason(body)


@pytest.mark.parametrize(
    ("attachment", "expected"),
    [
        ({"content_base64": "abc"}, "attachments[0].content_base64: not valid base64"),
        ({"content_base64": "aGk=\n"}, "not valid base64"),
        ({"content_base64": "aGk=aGk="}, "not valid base64"),
        ({"content_base64": "é"}, "not valid base64"),
        ({"filename": "../etc/passwd"}, "attachments[0].filename: '../etc/passwd'"),
        ({"filename": "a\\b.txt"}, "not a safe file name"),
        ({"filename": "evil\u202efdp.exe"}, "not a safe file name"),
        ({"filename": "a\r\nb"}, "not a safe file name"),
        ({"filename": "=?utf-8?q?=0A?=.txt"}, "encoded word"),
        ({"content_type": "text"}, "is not a media type"),
        ({"content_type": "text/plain; charset=utf-8"}, "is not a media type"),
        ({"content_type": "multipart/mixed"}, "cannot be attached"),
        ({"content_type": "message/rfc822"}, "cannot be attached"),
        ({"size": 1}, "attachments[0]: unknown field 'size'"),
    ],
)
def test_attachment_refusals(attachment: dict[str, Any], expected: str) -> None:
    good = {"filename": "a.txt", "content_type": "text/plain", "content_base64": "aGk="}
    assert expected in reason(job_bytes(attachments=[{**good, **attachment}]))


def test_size_cap() -> None:
    assert MAX_BODY_BYTES == 30 * 1024 * 1024
    body = job_bytes(text="x" * 100)
    assert "over the 50-byte limit" in reason(body, max_bytes=50)
    assert parse_job(body, max_bytes=len(body)).text == "x" * 100


def test_deep_nesting_is_refused() -> None:
    for depth in (65, 1_000, 100_000):
        body = b'{"from":"a@b.com","to":"c@d.com","text":"x","context":'
        body += b"[" * depth + b"]" * depth + b"}"
        assert "nested too deeply" in reason(body)
    ok = b'{"from":"a@b.com","to":"c@d.com","text":"x","context":{"a":'
    ok += b"[" * 62 + b"]" * 62 + b"}}"
    assert parse_job(ok).context == {"a": json.loads("[" * 62 + "]" * 62)}


def test_bom_is_tolerated_and_non_bytes_refused() -> None:
    assert parse_job(b"\xef\xbb\xbf" + job_bytes()).text == "hi"
    with pytest.raises(WireError, match="payload must be bytes, got str"):
        parse_job("{}")  # type: ignore[arg-type]  # the point of the test


# -- the schema --------------------------------------------------------------------


def test_schema_file_matches_the_published_copy() -> None:
    packaged = ROOT / "mailconsole" / "engine" / "wire_schema.json"
    published = ROOT / "docs" / "wire-schema.json"
    assert packaged.read_bytes() == published.read_bytes()
    assert schema() == json.loads(published.read_text(encoding="utf-8"))


def test_schema_is_draft_2020_12_and_one_of_the_two_formats() -> None:
    document = schema()
    Draft202012Validator.check_schema(document)
    validator = Draft202012Validator(document)
    assert validator.is_valid(json.loads(DOTNET_BODY))
    assert validator.is_valid(FULL)
    assert not validator.is_valid({"from": "a@b.com", "to": "c@d.com"})
    assert not validator.is_valid({**FULL, "SenderEmail": "a@b.com"})
    schema()["oneOf"].clear()  # callers get a copy
    assert schema()["oneOf"]
