"""Render a validated ``MailJob`` into the exact bytes handed to the SMTP client.

``Renderer.render`` returns a ``RenderedMessage`` whose ``data`` has CRLF line ends only
(no bare CR or LF anywhere), no line over 998 octets, and a header block in which every
line is a header this message is meant to have or a folded continuation: both are
asserted on the output, after every header value was re-checked with
``wire.check_header_value`` (CVE-2024-6923: never trust the stdlib to refuse them).
Anything that cannot be sent raises ``RenderError`` with one line of text.

Who does what on the wire: ``data`` is *not* dot-stuffed. aiosmtplib 5's
``SMTP.sendmail`` (-> ``SMTPProtocol.execute_data_command``) converts lone CR/LF to
CRLF, doubles a leading ``.`` on every line (``PERIOD_REGEX``) and appends the final
``.<CRLF>``; stuffing here too would double the dots. Line ends are normalised here
(bodies before encoding, and the output is checked), so the client's normalisation
never changes a byte. Whoever sends ``data`` by other means must dot-stuff it.

Speed: the MIME structure is written here rather than through ``EmailMessage`` and
``policy.SMTP``: that path measured ~0.93 ms for a 4 KB text message on this machine
(the hot path; see DESIGN.md "What costs what"), and its folder turns long unbreakable
ASCII values such as ``List-Unsubscribe`` URLs into encoded words. Bodies are 7bit
only when ASCII with lines of at most 78 characters, otherwise quoted-printable or
base64 (C encoders from ``binascii``), so no message needs 8BITMIME. Non-ASCII header
text is RFC 2047 ``B``-encoded; IDN domains are punycoded unless SMTPUTF8 is in use.

Length: this module is over the usual 400 lines because the MIME writer lives here;
the "headers" and "bodies" sections below could move to their own module unchanged.

Templates come only from the operator's templates directory, rendered in jinja2's
``ImmutableSandboxedEnvironment`` with ``StrictUndefined``; job text and HTML are data
and are never compiled as templates. This module must not do network or store I/O, log,
or read settings: everything it needs is passed to ``Renderer``.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
import secrets
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined, Template, select_autoescape
from jinja2.exceptions import (
    SecurityError,
    TemplateNotFound,
    TemplateSyntaxError,
    UndefinedError,
)
from jinja2.sandbox import ImmutableSandboxedEnvironment

from mailconsole.engine.wire import (
    FORBIDDEN_HEADERS,
    Address,
    Attachment,
    MailJob,
    WireError,
    check_header_value,
    parse_email,
)

MAX_LINE = 998
"""Longest line RFC 5322 allows, in octets, not counting the CRLF."""

_SEVEN_BIT_LINE = 78
_EW_BYTES = 39  # UTF-8 bytes per encoded word: 52 base64 characters, 64 in all
_ATEXT = "A-Za-z0-9!#$%&'*+/=?^_`{|}~-"
_ID_LEFT = re.compile(rf"[{_ATEXT}]{{1,200}}(?:\.[{_ATEXT}]+)*")
_LDH_DOMAIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
_PLAIN_PHRASE = re.compile(
    r"[A-Za-z0-9!#$%&'*+/^_`{|}~-]+(?: [A-Za-z0-9!#$%&'*+/^_`{|}~-]+)*"
)
_HEADER_NAME = re.compile(r"[!-9;-~]{1,76}")
_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*")
_SEVEN_BIT_BYTES = bytes([9, 10, *range(32, 127)])  # tab, LF and printable ASCII
_FOLD_SEGMENT = re.compile(r"[ \t]*[^ \t]+|[ \t]+")
_UNSAFE_TEXT = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_HIGH_BYTES = bytes(range(128, 256))
_ROOT_HEADERS = frozenset(
    {"from", "to", "cc", "reply-to", "subject", "date", "message-id", "mime-version"}
    | {"content-type", "content-transfer-encoding"}
)
_PART_HEADERS = frozenset(
    {"content-type", "content-transfer-encoding", "content-disposition"}
)

Entity = tuple[str, bytes]
"""A MIME entity: its header lines (CRLF-joined, no trailing CRLF) and its body."""


class RenderError(ValueError):
    """A job that cannot be rendered; ``str(err)`` is one line naming the cause."""


@dataclass(frozen=True, slots=True)
class RenderedMessage:
    """The bytes to send and the envelope to send them with."""

    message_id: str
    """The Message-ID header value, ``<...>`` included; the same on every retry."""
    envelope_from: str
    """MAIL FROM address: ASCII (IDN punycoded) unless ``smtputf8``."""
    recipients: tuple[str, ...]
    """RCPT TO addresses as given to ``render`` (punycoded unless ``smtputf8``)."""
    data: bytes
    """The whole message: CRLF line ends only, lines <= 998 octets, not dot-stuffed."""
    smtputf8: bool
    """True when a non-ASCII local part needs SMTPUTF8 (send with that MAIL option)."""


class Renderer:
    """Turns jobs into messages; build one per process and reuse it (it caches)."""

    def __init__(
        self, *, templates_dir: Path | None, message_id_domain: str, max_size: int
    ) -> None:
        """Args:
        templates_dir: operator templates (``<name>.txt``, ``<name>.html``,
            ``<name>.subject.txt``); None when jobs may not use templates.
        message_id_domain: the right-hand side of every Message-ID.
        max_size: largest rendered message accepted, in bytes.
        """
        if max_size <= 0:
            raise ValueError("max_size must be positive")
        self._max_size = max_size
        self._id_domain = _ascii_domain(message_id_domain)
        if not _LDH_DOMAIN.fullmatch(self._id_domain):
            raise ValueError(
                f"message_id_domain {message_id_domain!r} is not a host name"
            )
        self._env = None if templates_dir is None else _environment(templates_dir)

    def render(
        self,
        job: MailJob,
        *,
        message_id: str,
        date: datetime,
        recipients: Sequence[str] | None = None,
        smtputf8_available: bool = False,
    ) -> RenderedMessage:
        """Render ``job`` for one delivery attempt.

        Args:
            job: the validated job.
            message_id: the store's id, e.g. ``m-01JD...`` (a dot-atom).
            date: the Date header, timezone-aware.
            recipients: the envelope recipients still to send to; default all of
                ``job.envelope_recipients()``. Bcc never appears in the headers.
            smtputf8_available: whether the relay offers SMTPUTF8.

        Returns:
            The message bytes and envelope.

        Raises:
            RenderError: the job cannot be rendered (template, size, SMTPUTF8, ...).
            ValueError: ``message_id`` or ``date`` is not usable (a caller bug).
        """
        if not _ID_LEFT.fullmatch(message_id):
            raise ValueError(f"message_id {message_id!r} is not a dot-atom")
        if date.utcoffset() is None:
            raise ValueError("date must be timezone-aware")
        rcpts = _recipients(job, recipients)
        smtputf8 = _use_smtputf8(job, rcpts, smtputf8_available)
        subject, text, html = self._content(job)
        self._check_size(
            len(subject)
            + len(text or "")
            + len(html or "")
            + sum(len(a.content) for a in job.attachments),
            "at least ",
        )
        entity = _body_entity(text, html, job.attachments)
        message_id_value = f"<{message_id}@{self._id_domain}>"
        head = _message_headers(job, subject, message_id_value, date, smtputf8)
        try:
            data = ("\r\n".join([*head, entity[0]]) + "\r\n\r\n").encode(
                "utf-8" if smtputf8 else "ascii"
            ) + entity[1]
        except UnicodeEncodeError as exc:
            raise RenderError(f"header text cannot be encoded ({exc.reason})") from None
        _check_output(data, _ROOT_HEADERS | {k.lower() for k in job.headers})
        self._check_size(len(data), "")
        convert = _identity if smtputf8 else _ascii_email
        return RenderedMessage(
            message_id=message_id_value,
            envelope_from=convert(job.sender.email),
            recipients=tuple(convert(r) for r in rcpts),
            data=data,
            smtputf8=smtputf8,
        )

    def _check_size(self, size: int, qualifier: str) -> None:
        if size > self._max_size:
            limit = f"over the {self._max_size}-byte limit"
            raise RenderError(f"message is {qualifier}{size} bytes, {limit}")

    def _content(self, job: MailJob) -> tuple[str, str | None, str | None]:
        """Subject, text and HTML: the job's own, or rendered from its template (a
        template's parts replace the job's; a part it lacks keeps the job's)."""
        if job.template is None:
            return job.subject, job.text, job.html
        name = job.template
        if self._env is None:
            raise RenderError(
                f"job uses template {name!r}, but no templates directory is configured"
            )
        subject_t = self._load(f"{name}.subject.txt")
        text_t, html_t = self._load(f"{name}.txt"), self._load(f"{name}.html")
        if text_t is None and html_t is None:
            raise RenderError(
                f"template {name!r}: neither {name}.txt nor {name}.html exists"
            )
        context = dict(job.context)
        subject = job.subject
        if subject_t is not None:
            subject = _run(subject_t, context).strip()
            _checked(f"template {subject_t.name!r}", subject)
        text = job.text if text_t is None else _run(text_t, context)
        html = job.html if html_t is None else _run(html_t, context)
        return subject, text, html

    def _load(self, name: str) -> Template | None:
        assert self._env is not None
        try:
            return self._env.get_template(name)
        except TemplateNotFound as exc:
            if exc.name == name:
                return None
            raise RenderError(
                f"template {name!r}: {_one_line(str(exc))} not found"
            ) from None
        except TemplateSyntaxError as exc:
            raise RenderError(_syntax_reason(exc, name)) from None
        except Exception as exc:  # unreadable file, not UTF-8, ...
            raise RenderError(_exception_reason(name, exc)) from None


# -- templates ---------------------------------------------------------------------


def _environment(templates_dir: Path) -> ImmutableSandboxedEnvironment:
    return ImmutableSandboxedEnvironment(
        loader=FileSystemLoader(str(templates_dir)),
        undefined=StrictUndefined,
        autoescape=select_autoescape(
            enabled_extensions=("html", "htm"), default_for_string=False, default=False
        ),
        auto_reload=True,
    )


def _run(template: Template, context: dict[str, Any]) -> str:
    name = template.name or "?"
    try:
        return template.render(context)
    except SecurityError as exc:
        reason = f"refused by the sandbox: {_one_line(exc.message or str(exc))}"
        raise RenderError(f"template {name!r}: {reason}") from None
    except UndefinedError as exc:
        raise RenderError(
            f"template {name!r}: {_one_line(exc.message or str(exc))}"
        ) from None
    except TemplateSyntaxError as exc:
        raise RenderError(_syntax_reason(exc, name)) from None
    except TemplateNotFound as exc:
        raise RenderError(
            f"template {name!r}: included template {exc.name!r} not found"
        ) from None
    except Exception as exc:  # a template may raise anything (ZeroDivisionError, ...)
        raise RenderError(_exception_reason(name, exc)) from None


def _syntax_reason(exc: TemplateSyntaxError, name: str) -> str:
    where = f"template {exc.name or name!r} line {exc.lineno}"
    return f"{where}: {_one_line(exc.message or '')}"


def _exception_reason(name: str, exc: Exception) -> str:
    return f"template {name!r}: {type(exc).__name__}: {_one_line(str(exc))}"


def _one_line(text: str, limit: int = 300) -> str:
    flat = _UNSAFE_TEXT.sub(" ", text).encode("utf-8", "backslashreplace").decode()
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


# -- envelope ----------------------------------------------------------------------


def _recipients(job: MailJob, given: Sequence[str] | None) -> tuple[str, ...]:
    raw = job.envelope_recipients() if given is None else tuple(given)
    if not raw:
        raise RenderError("no recipients to send to")
    try:
        return tuple(
            parse_email(r, field=f"recipients[{i}]") for i, r in enumerate(raw)
        )
    except WireError as exc:
        raise RenderError(str(exc)) from None


def _use_smtputf8(job: MailJob, rcpts: tuple[str, ...], available: bool) -> bool:
    """True when some address needs SMTPUTF8; RenderError when the relay lacks it."""
    needs: list[tuple[str, str]] = []
    if job.sender.needs_smtputf8:
        needs.append(("sender", job.sender.email))
    needs += [("recipient", r) for r in rcpts if not r.rpartition("@")[0].isascii()]
    for label, addresses in (
        ("To", job.to),
        ("Cc", job.cc),
        ("Reply-To", job.reply_to),
    ):
        needs += [(f"{label} address", a.email) for a in addresses if a.needs_smtputf8]
    if needs and not available:
        role, email = needs[0]
        raise RenderError(
            f"{role} {email} needs SMTPUTF8, which the relay does not offer"
        )
    return bool(needs)


def _identity(email: str) -> str:
    return email


def _ascii_email(email: str) -> str:
    local, _, domain = email.rpartition("@")
    return email if domain.isascii() else f"{local}@{_ascii_domain(domain)}"


@functools.lru_cache(maxsize=4096)
def _ascii_domain(domain: str) -> str:
    if domain.isascii():
        return domain
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        raise RenderError(f"domain {domain!r} cannot be punycoded") from None


# -- headers -----------------------------------------------------------------------


def _message_headers(
    job: MailJob, subject: str, message_id: str, date: datetime, smtputf8: bool
) -> list[str]:
    lines = [
        _address_header("From", (job.sender,), smtputf8),
        _address_header("To", job.to, smtputf8),
    ]
    if job.cc:
        lines.append(_address_header("Cc", job.cc, smtputf8))
    if job.reply_to:
        lines.append(_address_header("Reply-To", job.reply_to, smtputf8))
    if subject:
        lines.append(_unstructured("Subject", subject))
    lines += [f"Date: {format_datetime(date)}", f"Message-ID: {message_id}"]
    for name, value in job.headers.items():
        low = name.lower()
        if not _HEADER_NAME.fullmatch(name) or low in FORBIDDEN_HEADERS:
            raise RenderError(f"header {name!r} may not be set by a job")
        if low.startswith("content-") or low in _ROOT_HEADERS:
            raise RenderError(f"header {name!r} may not be set by a job")
        lines.append(_unstructured(name, value))
    lines.append("MIME-Version: 1.0")
    return lines


def _checked(name: str, value: str) -> None:
    try:
        check_header_value(name, value)
    except WireError as exc:
        raise RenderError(str(exc)) from None


def _address_header(name: str, addresses: Sequence[Address], smtputf8: bool) -> str:
    """``Name: a, b`` folded between addresses to keep lines near 78 characters."""
    parts, width = [f"{name}: "], len(name) + 2
    for i, address in enumerate(addresses):
        item = _mailbox(address, smtputf8, name)
        first, _, _ = item.partition("\r\n")
        if i and width + 2 + len(first) > _SEVEN_BIT_LINE:
            parts.append(",\r\n ")
            width = 1
        elif i:
            parts.append(", ")
            width += 2
        parts.append(item)
        width = len(item.rpartition("\r\n")[2]) + (0 if "\r\n" in item else width)
    return "".join(parts)


def _mailbox(address: Address, smtputf8: bool, field: str) -> str:
    _checked(field, address.name)
    _checked(field, address.email)
    spec = address.email if smtputf8 else _ascii_email(address.email)
    if not address.name:
        return spec
    name = address.name
    if _PLAIN_PHRASE.fullmatch(name):
        phrase = name
    elif name.isascii():
        phrase = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    else:
        phrase = "\r\n ".join(_encoded_words(name))
    return f"{phrase} <{spec}>"


def _unstructured(name: str, value: str) -> str:
    """``Name: value``: ASCII folded at whitespace, anything else RFC 2047-encoded."""
    _checked(name, value)
    if value.isascii():
        lines, line, folded = [], f"{name}: ", False
        for segment in _FOLD_SEGMENT.findall(value):
            fits = len(line) + len(segment) <= _SEVEN_BIT_LINE
            if folded and not fits and segment[0] in " \t" and segment.strip():
                lines.append(line)
                line = segment
            else:
                line += segment
            folded = True
        lines.append(line)
        if max(map(len, lines)) <= MAX_LINE:
            return "\r\n".join(lines)
    return f"{name}: " + "\r\n ".join(_encoded_words(value))


def _encoded_words(text: str) -> list[str]:
    """RFC 2047 ``B`` words of at most 64 characters, never splitting a character."""
    raw, words, start = text.encode("utf-8", "surrogatepass"), [], 0
    while start < len(raw):
        end = min(start + _EW_BYTES, len(raw))
        while end < len(raw) and raw[end] & 0xC0 == 0x80:
            end -= 1
        words.append(f"=?utf-8?b?{base64.b64encode(raw[start:end]).decode()}?=")
        start = end
    return words


# -- bodies ------------------------------------------------------------------------


def _body_entity(
    text: str | None, html: str | None, attachments: Sequence[Attachment]
) -> Entity:
    bodies = [(b, sub) for b, sub in ((text, "plain"), (html, "html")) if b is not None]
    parts = [_text_entity(b, sub) for b, sub in bodies] or [_text_entity("", "plain")]
    entity = parts[0] if len(parts) == 1 else _multipart("alternative", parts)
    if attachments:
        entity = _multipart("mixed", [entity, *map(_attachment_entity, attachments)])
    return entity


def _text_entity(text: str, subtype: str) -> Entity:
    cte, body = _encode_text(text)
    return (
        f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
        f"Content-Transfer-Encoding: {cte}",
        body,
    )


def _encode_text(text: str) -> tuple[str, bytes]:
    """Line ends unified to one form first; 7bit, quoted-printable or base64 after."""
    unified = text.replace("\r\n", "\n").replace("\r", "\n")
    try:
        raw = unified.encode("utf-8")
    except UnicodeEncodeError:
        raise RenderError("body contains invalid Unicode (lone surrogate)") from None
    seven_bit = unified.isascii() and not raw.translate(None, _SEVEN_BIT_BYTES)
    if seven_bit and max(map(len, raw.split(b"\n"))) <= _SEVEN_BIT_LINE:
        return "7bit", _end_line(raw.replace(b"\n", b"\r\n"))
    high = len(raw) - len(raw.translate(None, _HIGH_BYTES))
    if high * 6 <= len(raw):  # mostly ASCII: QP is smaller and readable
        encoded = binascii.b2a_qp(raw, istext=True, header=False)
        return "quoted-printable", _end_line(encoded.replace(b"\n", b"\r\n"))
    return "base64", _base64_lines(raw.replace(b"\n", b"\r\n"))  # canonical CRLF


def _end_line(body: bytes) -> bytes:
    return body if not body or body.endswith(b"\r\n") else body + b"\r\n"


def _base64_lines(raw: bytes) -> bytes:
    encoded = binascii.b2a_base64(raw, newline=False)
    return b"".join(encoded[i : i + 76] + b"\r\n" for i in range(0, len(encoded), 76))


def _attachment_entity(attachment: Attachment) -> Entity:
    name = attachment.filename
    _checked("attachment filename", name)
    if not _MEDIA_TYPE.fullmatch(attachment.content_type):
        raise RenderError(
            f"attachment {name!r}: bad content type {attachment.content_type!r}"
        )
    headers = (
        f"Content-Type: {attachment.content_type};\r\n {_parameter('name', name)}\r\n"
        f"Content-Disposition: attachment;\r\n {_parameter('filename', name)}\r\n"
        "Content-Transfer-Encoding: base64"
    )
    return headers, _base64_lines(attachment.content)


def _parameter(key: str, value: str) -> str:
    """A MIME parameter: quoted-string when printable ASCII, else RFC 2231 (split)."""
    if value.isascii() and value.isprintable():
        return f'{key}="' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    quoted = urllib.parse.quote(value, safe="", encoding="utf-8", errors="strict")
    if len(quoted) <= 60:
        return f"{key}*=utf-8''{quoted}"
    chunks, start = [], 0
    while start < len(quoted):
        end = min(start + 60, len(quoted))
        cut = quoted.rfind("%", max(start, end - 2), end)  # do not split a %XX escape
        end = cut if cut > start and end < len(quoted) else end
        chunks.append(quoted[start:end])
        start = end
    return ";\r\n ".join(
        f"{key}*{i}*={'utf-8' + chr(39) * 2 if i == 0 else ''}{chunk}"
        for i, chunk in enumerate(chunks)
    )


def _multipart(subtype: str, children: list[Entity]) -> Entity:
    for headers, _ in children:
        _check_header_block(headers.encode("ascii"), _PART_HEADERS)
    boundary = "=_mc_" + secrets.token_hex(16)
    while any(boundary.encode() in body for _, body in children):
        boundary = "=_mc_" + secrets.token_hex(16)  # never in practice: 128 random bits
    delimiter = b"--" + boundary.encode()
    body = b"".join(
        delimiter + b"\r\n" + headers.encode("ascii") + b"\r\n\r\n" + content + b"\r\n"
        for headers, content in children
    )
    return (
        f'Content-Type: multipart/{subtype};\r\n boundary="{boundary}"',
        body + delimiter + b"--\r\n",
    )


# -- output checks -----------------------------------------------------------------


def _check_output(data: bytes, allowed: frozenset[str]) -> None:
    """Refuse bare CR/LF, NUL, long lines, and header lines we did not mean to write."""
    crlf = data.count(b"\r\n")
    if data.count(b"\r") != crlf or data.count(b"\n") != crlf:
        raise RenderError("rendered message has a bare CR or LF (refusing to send)")
    if b"\0" in data:
        raise RenderError("rendered message has a NUL byte (refusing to send)")
    longest = max(map(len, data.split(b"\r\n")))
    if longest > MAX_LINE:
        raise RenderError(
            f"rendered message has a {longest}-octet line, over {MAX_LINE}"
        )
    end = data.find(b"\r\n\r\n")
    _check_header_block(data[: end if end >= 0 else len(data)], allowed)


def _check_header_block(block: bytes, allowed: frozenset[str]) -> None:
    for line in block.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and line.strip():
            continue
        name, colon, _ = line.partition(b":")
        if not colon or name.decode("latin-1").lower() not in allowed:
            raise RenderError(
                f"rendered header line {line[:60]!r} is not one this message should"
                " have (refusing to send)"
            )
