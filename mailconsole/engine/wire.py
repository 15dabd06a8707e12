"""Mail job payloads from the queue -> a validated, immutable ``MailJob``.

Two formats arrive on the ``mail`` queue (see docs/wire-format.md and the JSON Schema
in wire_schema.json, copied to docs/wire-schema.json): the .NET producers' PascalCase
object and the extended snake_case object. ``parse_job`` turns raw bytes into a
``MailJob`` or raises ``WireError`` -- and nothing else, for any input -- whose text is
one line naming the field, safe to store and show (user data appears only through
``repr``, truncated).

Checks happen in this order: size cap, UTF-8, JSON (no NaN/Infinity, no duplicate
keys), nesting depth and lone surrogates (before the schema, so hostile nesting is
cheap), the JSON Schema, then semantic rules: strict address syntax, header injection
(including RFC 2047 encoded words: CPython 3.11.7 has CVE-2024-6923), base64, dates.

Address syntax, header checks and ``WireError`` live in ``wire_addresses``, the
one-line reasons for schema failures in ``wire_schema_errors``; this module re-exports
their public names, so import everything from here.

This module must not do I/O beyond reading its own schema file, must not log, and must
not know about the store, the broker or SMTP. It is pure and safe to call from anywhere.
"""

from __future__ import annotations

import base64
import binascii
import functools
import importlib.resources
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

# jsonschema ships no type information and types-jsonschema is not a dependency.
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from jsonschema.exceptions import best_match  # type: ignore[import-untyped]

from mailconsole.engine.wire_addresses import (
    Address,
    WireError,
    _clean_name,
    _json_type,
    _show,
    check_header_value,
    parse_address,
    parse_email,
)
from mailconsole.engine.wire_schema_errors import _path, _relevance, _schema_reason

__all__ = [
    "FORBIDDEN_HEADERS",
    "MAX_BODY_BYTES",
    "MAX_DEPTH",
    "MAX_RECIPIENTS",
    "Address",
    "Attachment",
    "MailJob",
    "WireError",
    "check_header_value",
    "parse_address",
    "parse_email",
    "parse_job",
    "schema",
]

MAX_BODY_BYTES = 30 * 1024 * 1024
"""Default cap on a raw payload accepted by ``parse_job``, in bytes (30 MiB)."""
MAX_DEPTH = 64
"""Deepest JSON nesting accepted; the top-level object is level 1."""
MAX_RECIPIENTS = 1000
"""Most envelope recipients (to + cc + bcc, before de-duplication) in one job."""

FORBIDDEN_HEADERS = frozenset(
    {"from", "sender", "to", "cc", "bcc", "reply-to", "subject", "message-id", "date"}
    | {"mime-version", "return-path", "received"}
)
"""Header names a job may not set (nor any ``Content-*``): the renderer writes them."""

_SURROGATE = re.compile("[\ud800-\udfff]")
_FTEXT = re.compile(r"[!-9;-~]{1,76}")
_TEMPLATE = re.compile(r"[A-Za-z0-9_-]+(?:[./][A-Za-z0-9_-]+)*")
_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*")
_HTML_START = re.compile(r"\s*<")
_HTML_TAG = re.compile(
    r"<(?:!doctype\s+html|html|head|body|p|br|div|span|table)\b", re.I
)


@dataclass(frozen=True, slots=True)
class Attachment:
    """An attached file; ``content_type`` is a lower-case ``type/subtype``."""

    filename: str
    content_type: str
    content: bytes


@dataclass(frozen=True, slots=True)
class MailJob:
    """A validated mail job (not hashable: ``context`` and ``headers`` are dicts)."""

    sender: Address
    to: tuple[Address, ...]
    cc: tuple[Address, ...] = ()
    bcc: tuple[Address, ...] = ()
    reply_to: tuple[Address, ...] = ()
    subject: str = ""
    text: str | None = None
    html: str | None = None
    template: str | None = None
    """Template name relative to the templates directory (see render.py)."""
    context: Mapping[str, Any] = field(default_factory=dict)
    """Template variables: a JSON object."""
    headers: Mapping[str, str] = field(default_factory=dict)
    """Extra headers (``X-...``, ``List-Unsubscribe`` ...), already checked."""
    attachments: tuple[Attachment, ...] = ()
    send_at: datetime | None = None
    """Timezone-aware, in UTC."""
    priority: int = 0
    idempotency_key: str | None = None
    """The extended format's ``id``."""
    source_format: Literal["dotnet", "extended"] = "extended"

    def envelope_recipients(self) -> tuple[str, ...]:
        """To, cc and bcc addresses in order, duplicates (case-insensitive) removed."""
        seen: set[str] = set()
        out: list[str] = []
        for address in (*self.to, *self.cc, *self.bcc):
            key = address.email.casefold()
            if key not in seen:
                seen.add(key)
                out.append(address.email)
        return tuple(out)

    def to_json(self) -> dict[str, Any]:
        """The canonical extended form; only non-default top-level keys are kept."""
        out: dict[str, Any] = {}
        if self.idempotency_key is not None:
            out["id"] = self.idempotency_key
        out["from"] = _address_json(self.sender)
        for key, addresses in (("to", self.to), ("cc", self.cc), ("bcc", self.bcc)):
            if addresses or key == "to":
                out[key] = [_address_json(a) for a in addresses]
        if self.reply_to:
            out["reply_to"] = [_address_json(a) for a in self.reply_to]
        optional: dict[str, Any] = {
            "subject": self.subject or None,
            "text": self.text,
            "html": self.html,
            "template": self.template,
            "context": dict(self.context) or None,
            "headers": dict(self.headers) or None,
            "attachments": [_attachment_json(a) for a in self.attachments] or None,
            "send_at": self.send_at.isoformat() if self.send_at else None,
            "priority": self.priority or None,
        }
        out.update((k, v) for k, v in optional.items() if v is not None)
        return out


def schema() -> dict[str, Any]:
    """The wire JSON Schema (draft 2020-12, ``oneOf`` the two formats); a fresh copy."""
    loaded: dict[str, Any] = json.loads(_schema_text())
    return loaded


def parse_job(body: bytes, *, max_bytes: int = MAX_BODY_BYTES) -> MailJob:
    """Parse and validate one queue payload.

    Args:
        body: the raw message body.
        max_bytes: payloads longer than this are refused before decoding.

    Returns:
        The validated job.

    Raises:
        WireError: for any input that is not a valid job (and never anything else).
    """
    obj = _load_json(body, max_bytes)
    if not isinstance(obj, dict):
        raise WireError(f"payload must be a JSON object, got {_json_type(obj)}")
    _check_tree(obj)
    dotnet = "SenderEmail" in obj or "RecipientEmail" in obj
    validator = _validators()["dotnet" if dotnet else "extended"]
    error = best_match(validator.iter_errors(obj), key=_relevance)
    if error is not None:
        raise WireError(_schema_reason(error))
    return _build_dotnet(obj) if dotnet else _build_extended(obj)


# -- loading and structural checks -------------------------------------------------


def _load_json(body: bytes, max_bytes: int) -> Any:
    if not isinstance(body, bytes | bytearray | memoryview):
        raise WireError(f"payload must be bytes, got {type(body).__name__}")
    raw = bytes(body)
    if len(raw) > max_bytes:
        raise WireError(f"payload is {len(raw)} bytes, over the {max_bytes}-byte limit")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WireError(f"not UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        return json.loads(
            text.removeprefix("\ufeff"),
            object_pairs_hook=_no_duplicate_keys,
            parse_constant=_no_constant,
            parse_float=_finite_float,
        )
    except WireError:
        raise
    except json.JSONDecodeError as exc:
        raise WireError(
            f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise WireError(f"nested too deeply (more than {MAX_DEPTH} levels)") from None
    except ValueError as exc:  # e.g. an integer over the 4300-digit conversion limit
        raise WireError(f"not valid JSON: {_show(str(exc))}") from None


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise WireError(f"not valid JSON: duplicate key {_show(key)}")
            seen.add(key)
    return obj


def _no_constant(name: str) -> Any:
    raise WireError(f"not valid JSON: {name} is not a JSON number")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise WireError(f"not valid JSON: number {_show(text)} is out of range")
    return number


def _check_tree(root: dict[str, Any]) -> None:
    """Depth and lone surrogates, iteratively, before any recursive validation."""
    stack: list[tuple[Any, int, tuple[str | int, ...]]] = [(root, 1, ())]
    while stack:
        node, depth, path = stack.pop()
        if depth > MAX_DEPTH:
            raise WireError(f"nested too deeply (more than {MAX_DEPTH} levels)")
        items: Iterable[tuple[str | int, Any]]
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in items:
            if isinstance(key, str) and _SURROGATE.search(key):
                where = _path(path) or "the payload"
                raise WireError(f"invalid Unicode (lone surrogate) in a key of {where}")
            if isinstance(value, str):
                if _SURROGATE.search(value):
                    where = _path((*path, key))
                    raise WireError(f"invalid Unicode (lone surrogate) in {where}")
            elif isinstance(value, dict | list):
                stack.append((value, depth + 1, (*path, key)))


@functools.cache
def _schema_text() -> str:
    resource = importlib.resources.files(__package__ or "mailconsole.engine")
    return resource.joinpath("wire_schema.json").read_text(encoding="utf-8")


@functools.cache
def _validators() -> dict[str, Draft202012Validator]:
    root = json.loads(_schema_text())
    del root["oneOf"]  # validate the detected format alone, for precise reasons
    return {
        fmt: Draft202012Validator({**root, "$ref": f"#/$defs/{fmt}"})
        for fmt in ("dotnet", "extended")
    }


# -- building the model ------------------------------------------------------------


def _build_dotnet(obj: dict[str, Any]) -> MailJob:
    content: str = obj["Content"]
    is_html = _looks_like_html(content)
    check_header_value("Subject", obj["Subject"])
    return MailJob(
        sender=Address(
            parse_email(obj["SenderEmail"], field="SenderEmail"),
            _clean_name(obj.get("SenderName"), "SenderName"),
        ),
        to=(
            Address(
                parse_email(obj["RecipientEmail"], field="RecipientEmail"),
                _clean_name(obj.get("RecipientName"), "RecipientName"),
            ),
        ),
        subject=obj["Subject"],
        text=None if is_html else content,
        html=content if is_html else None,
        source_format="dotnet",
    )


def _looks_like_html(content: str) -> bool:
    """.NET ``Content`` is HTML when it starts (after whitespace) with ``<`` and has
    one of the tags ``<html <head <body <p <br <div <span <table`` or a doctype."""
    return bool(_HTML_START.match(content)) and _HTML_TAG.search(content) is not None


def _build_extended(obj: dict[str, Any]) -> MailJob:
    to = _addresses(obj["to"], "to")
    cc, bcc = _addresses(obj.get("cc"), "cc"), _addresses(obj.get("bcc"), "bcc")
    total = len(to) + len(cc) + len(bcc)
    if total > MAX_RECIPIENTS:
        raise WireError(
            f"to+cc+bcc: {total} recipients, over the limit of {MAX_RECIPIENTS}"
        )
    subject = obj.get("subject") or ""
    check_header_value("subject", subject)
    template = obj.get("template")
    if template is not None and not _TEMPLATE.fullmatch(template):
        raise WireError(f"template: {_show(template)} is not a valid template name")
    key = obj.get("id")
    if key is not None and not key.isprintable():
        raise WireError("id: contains control or invisible format characters")
    return MailJob(
        sender=parse_address(obj["from"], field="from"),
        to=to,
        cc=cc,
        bcc=bcc,
        reply_to=_addresses(obj.get("reply_to"), "reply_to"),
        subject=subject,
        text=obj.get("text"),
        html=obj.get("html"),
        template=template,
        context=obj.get("context") or {},
        headers=_headers(obj.get("headers") or {}),
        attachments=tuple(
            _attachment(a, f"attachments[{i}]")
            for i, a in enumerate(obj.get("attachments") or ())
        ),
        send_at=_send_at(obj.get("send_at")),
        priority=int(obj.get("priority") or 0),
        idempotency_key=key,
    )


def _addresses(value: Any, field: str) -> tuple[Address, ...]:
    if value is None:
        return ()
    if isinstance(value, list):
        return tuple(
            parse_address(v, field=f"{field}[{i}]") for i, v in enumerate(value)
        )
    return (parse_address(value, field=field),)


def _headers(value: dict[str, str]) -> dict[str, str]:
    seen: set[str] = set()
    for name, text in value.items():
        where = _path(("headers", name))
        if not _FTEXT.fullmatch(name):
            raise WireError(f"headers: {_show(name)} is not a valid header name")
        low = name.lower()
        if low in FORBIDDEN_HEADERS or low.startswith("content-"):
            raise WireError(f"{where}: may not be set by a job (mailconsole writes it)")
        if low in seen:
            raise WireError(f"{where}: duplicate header (names are case-insensitive)")
        seen.add(low)
        check_header_value(where, text)
    return dict(value)


def _attachment(obj: dict[str, str], field: str) -> Attachment:
    name = obj["filename"]
    if name in (".", "..") or "/" in name or "\\" in name or not name.isprintable():
        raise WireError(
            f"{field}.filename: {_show(name)} is not a safe file name"
            " (no path separators, control or invisible characters)"
        )
    check_header_value(f"{field}.filename", name)
    media = obj["content_type"].lower()
    if not _MEDIA_TYPE.fullmatch(media):
        raise WireError(f"{field}.content_type: {_show(media)} is not a type/subtype")
    if media.startswith(("multipart/", "message/")):
        raise WireError(
            f"{field}.content_type: {media} cannot be attached as a file;"
            " use application/octet-stream"
        )
    try:
        content = binascii.a2b_base64(obj["content_base64"], strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise WireError(f"{field}.content_base64: not valid base64 ({exc})") from None
    return Attachment(name, media, content)


def _send_at(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise WireError(
            f"send_at: {_show(value)} is not an ISO-8601 date-time"
        ) from None
    if when.utcoffset() is None:
        raise WireError(f"send_at: {_show(value)} has no UTC offset (add Z or +hh:mm)")
    try:
        return when.astimezone(UTC)
    except (OverflowError, ValueError):
        raise WireError(f"send_at: {_show(value)} is out of range") from None


def _address_json(address: Address) -> str | dict[str, str]:
    return (
        {"name": address.name, "email": address.email}
        if address.name
        else address.email
    )


def _attachment_json(attachment: Attachment) -> dict[str, str]:
    return {
        "filename": attachment.filename,
        "content_type": attachment.content_type,
        "content_base64": base64.b64encode(attachment.content).decode("ascii"),
    }
