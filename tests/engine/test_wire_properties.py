"""Properties: parse_job raises only WireError for anything; valid jobs round-trip and
render to CRLF-only bytes with short lines (or a RenderError)."""

from __future__ import annotations

import base64
import email
import email.policy
import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailconsole.engine.render import Renderer, RenderError
from mailconsole.engine.wire import WireError, parse_job

PROPERTY = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
RENDERER = Renderer(
    templates_dir=None, message_id_domain="mx.example.com", max_size=2**20
)
DATE = datetime(2024, 3, 1, tzinfo=UTC)

TRICKY = st.sampled_from(
    [
        "",
        "a@b.com",
        "Bob <bob@example.com>",
        "bob@",
        "=?UTF-8?Q?=0A?=Bcc: x@y",
        "hi\r\nBcc: x@y",
        "\ud800",
        "jörg@bücher.de",
        "a@faß.de",
        "2030-01-01T00:00:00Z",
        "2030-01-01T00:00:00",
        "aGk=",
        "abc",
        "../x",
        "text/plain",
        "multipart/mixed",
        "<p>x</p>",
    ]
)
JSON_SCALARS = (
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | TRICKY
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=8) | TRICKY, children, max_size=4)
    ),
    max_leaves=20,
)
EXTENDED_KEYS = [
    "id",
    "from",
    "to",
    "cc",
    "bcc",
    "reply_to",
    "subject",
    "text",
    "html",
    "template",
    "context",
    "headers",
    "attachments",
    "send_at",
    "priority",
]
DOTNET_KEYS = [
    "SenderName",
    "SenderEmail",
    "RecipientName",
    "RecipientEmail",
    "Subject",
    "Content",
]


def only_wire_errors(body: bytes) -> None:
    try:
        parse_job(body)
    except WireError as exc:
        text = str(exc)
        assert text and "\n" not in text and "\r" not in text
        text.encode("utf-8")


@PROPERTY
@given(st.binary(max_size=512))
def test_arbitrary_bytes_raise_only_wire_error(body: bytes) -> None:
    only_wire_errors(body)


@PROPERTY
@given(JSON_VALUES)
def test_arbitrary_json_raises_only_wire_error(value: Any) -> None:
    only_wire_errors(json.dumps(value).encode())


@PROPERTY
@given(
    st.dictionaries(st.sampled_from(EXTENDED_KEYS), JSON_VALUES, max_size=10)
    | st.dictionaries(st.sampled_from(DOTNET_KEYS), JSON_VALUES, max_size=6),
    st.fixed_dictionaries(
        {"from": TRICKY, "to": TRICKY | st.lists(TRICKY, max_size=3)}
    ),
)
def test_near_valid_jobs_raise_only_wire_error(
    fields: dict[str, Any], base: dict[str, Any]
) -> None:
    only_wire_errors(json.dumps({**base, "text": "x", **fields}).encode())


# -- valid jobs --------------------------------------------------------------------

CLEAN_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)

ATOM = st.text(
    "abcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+/=?^_`{|}~-", min_size=1, max_size=8
)
LOCAL = st.lists(ATOM, min_size=1, max_size=3).map(".".join) | st.sampled_from(
    ["jörg", "用户", '"quoted.local"']
)
LABEL = st.from_regex(r"\A[a-z0-9](?:[a-z0-9-]{0,8}[a-z0-9])?\Z") | st.sampled_from(
    ["bücher", "münchen", "例え"]
)
DOMAIN = st.builds(
    lambda labels, tld: ".".join([*labels, tld]),
    st.lists(LABEL, min_size=1, max_size=3),
    st.sampled_from(["com", "org", "de", "xn--p1ai"]),
)
EMAIL = st.builds(lambda local, domain: f"{local}@{domain}", LOCAL, DOMAIN)
HEADER_TEXT = st.text(
    st.characters(blacklist_categories=["Cc", "Cs", "Zl", "Zp"], max_codepoint=0x2FFFF)
    | st.just("\t"),
    max_size=60,
)
ADDRESS = EMAIL | st.fixed_dictionaries({"email": EMAIL, "name": HEADER_TEXT})
BODY = st.text(max_size=300) | st.sampled_from(["a\n.\nb", "a\r.\rb", "\r\n.\r\n", ""])
ATTACHMENT = st.fixed_dictionaries(
    {
        "filename": HEADER_TEXT.filter(
            lambda s: s.strip() and s not in (".", "..") and s.isprintable()
        ).map(lambda s: s.replace("/", "_").replace("\\", "_")),
        "content_type": st.sampled_from(["application/pdf", "text/csv", "image/png"]),
        "content_base64": st.binary(max_size=200).map(
            lambda b: base64.b64encode(b).decode()
        ),
    }
)
VALID_JOB = st.fixed_dictionaries(
    {"from": ADDRESS, "to": st.lists(ADDRESS, min_size=1, max_size=4) | ADDRESS},
    optional={
        "id": st.text(
            st.characters(
                blacklist_categories=["Cc", "Cs", "Cf", "Cn", "Co", "Zl", "Zp", "Zs"]
            ),
            min_size=1,
            max_size=40,
        ),
        "cc": st.lists(ADDRESS, max_size=3),
        "bcc": st.lists(ADDRESS, max_size=3),
        "reply_to": ADDRESS,
        "subject": HEADER_TEXT,
        "text": BODY,
        "html": BODY,
        "context": st.dictionaries(st.text(max_size=5), CLEAN_JSON, max_size=3),
        "headers": st.dictionaries(
            st.from_regex(r"\AX-[A-Za-z0-9-]{1,10}\Z"), HEADER_TEXT, max_size=3
        ).filter(lambda h: len({k.lower() for k in h}) == len(h)),
        "attachments": st.lists(ATTACHMENT, max_size=2),
        "send_at": st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat()),
        "priority": st.integers(-10, 10),
    },
).map(lambda job: job if {"text", "html"} & job.keys() else {**job, "text": "x"})


@PROPERTY
@given(VALID_JOB)
def test_valid_jobs_round_trip_and_render_safely(payload: dict[str, Any]) -> None:
    job = parse_job(json.dumps(payload).encode())
    assert parse_job(json.dumps(job.to_json()).encode()) == job
    for smtputf8 in (False, True):
        try:
            out = RENDERER.render(
                job, message_id="m-1", date=DATE, smtputf8_available=smtputf8
            )
        except RenderError as exc:
            assert "SMTPUTF8" in str(exc) and not smtputf8
            continue
        data = out.data
        assert data.count(b"\r") == data.count(b"\r\n") == data.count(b"\n")
        assert max(len(line) for line in data.split(b"\r\n")) <= 998
        if not out.smtputf8:
            assert data.isascii()
            message = email.message_from_bytes(data, policy=email.policy.default)
            assert message["Subject"] == (job.subject.strip() or None)
            assert len(list(message.iter_attachments())) == len(job.attachments)
