"""The mail job form shared by Compose and edit-then-replay.

Fields in, a job (the extended wire object, as a plain dict) out: :meth:`JobForm.job`
builds it and every edit posts :class:`JobForm.Changed`. The form checks only what
the engine cannot see (is the context JSON, is send-at a time); the screen asks
``ops.validate`` about everything else. Text loaded from a stored message is
untrusted: :meth:`JobForm.load` shows control characters spelled out, so nothing
raw reaches the terminal (saving keeps what the operator sees).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.containers import Grid, VerticalScroll
from textual.message import Message
from textual.widgets import Input, Label, TextArea

from mailconsole.widgets.safe_text import visible

FIELDS = (
    ("from", "From", "Shop <shop@example.com>"),
    ("to", "To", "bob@example.com, Ann <ann@example.com>"),
    ("cc", "Cc", ""),
    ("subject", "Subject", ""),
    ("template", "Template", "a template name, instead of a body"),
    ("send_at", "Send at", "now, +10m, +2h, or 2030-01-01T09:00:00+00:00"),
)
MANAGED = frozenset(
    {"from", "to", "cc", "subject", "text", "template", "context", "send_at"}
)
_RELATIVE = re.compile(r"^\+\s*(\d+)\s*([smhd])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _addresses(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _address_text(value: Any) -> str:
    """An address or list of them, as the wire allows, back to editable text."""
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ", ".join(_address_text(item) for item in value)
    if isinstance(value, Mapping):
        name, email = value.get("name"), value.get("email", "")
        return f"{name} <{email}>" if name else str(email)
    return str(value)


def from_dotnet(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The .NET producers' object as the extended one (for editing)."""
    job: dict[str, Any] = {
        "from": {
            "name": payload.get("SenderName"),
            "email": payload.get("SenderEmail"),
        },
        "to": [
            {
                "name": payload.get("RecipientName"),
                "email": payload.get("RecipientEmail"),
            }
        ],
        "subject": payload.get("Subject"),
    }
    content = str(payload.get("Content") or "")
    job["html" if content.lstrip().startswith("<") else "text"] = content
    return job


def parse_send_at(value: str, now: datetime) -> str | None:
    """``+10m`` (from now) or an ISO-8601 time with offset, as ISO-8601; ``None`` when
    blank or ``now``.

    Raises:
        ValueError: neither form.
    """
    value = value.strip()
    if not value or value.lower() == "now":
        return None
    if match := _RELATIVE.match(value):
        delta = timedelta(seconds=int(match[1]) * _UNIT[match[2]])
        return (now + delta).isoformat()
    when = datetime.fromisoformat(value)
    if when.tzinfo is None:
        raise ValueError("send at needs an offset, e.g. +00:00")
    return when.isoformat()


class JobForm(VerticalScroll):
    """From, to, cc, subject, template, send-at, body and template context."""

    DEFAULT_CSS = """
    JobForm { height: 1fr; }
    JobForm Grid { grid-size: 2; grid-columns: 10 1fr; grid-rows: 1; height: auto; }
    JobForm Label { color: $text-muted; }
    JobForm #body { height: 8; min-height: 4; }
    JobForm #context { height: 4; }
    JobForm .section { color: $text-muted; margin-top: 1; }
    """

    class Changed(Message):
        """A field changed; the screen re-validates."""

        def __init__(self, form: JobForm) -> None:
            super().__init__()
            self.form = form

        @property
        def control(self) -> JobForm:
            return self.form

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._extra: dict[str, Any] = {}

    def compose(self) -> ComposeResult:
        with Grid():
            for key, title, hint in FIELDS:
                yield Label(title)
                yield Input(placeholder=hint, id=f"field-{key}", compact=True)
        yield Label("Body (text)", classes="section")
        yield TextArea(id="body", soft_wrap=True, tab_behavior="focus", compact=True)
        yield Label("Template context (JSON object)", classes="section")
        yield TextArea(id="context", soft_wrap=True, tab_behavior="focus", compact=True)

    def _value(self, key: str) -> str:
        return self.query_one(f"#field-{key}", Input).value

    def load(self, payload: Mapping[str, Any]) -> None:
        """Fill the form from a stored payload; unknown fields are kept as they are."""
        job = dict(from_dotnet(payload) if "SenderEmail" in payload else payload)
        self._extra = {k: v for k, v in job.items() if k not in MANAGED}
        for key, _title, _hint in FIELDS:
            raw = job.get(key)
            text = _address_text(raw) if key in ("from", "to", "cc") else str(raw or "")
            self.query_one(f"#field-{key}", Input).value = visible(
                text, single_line=True
            )
        self.query_one("#body", TextArea).text = visible(job.get("text") or "")
        context = job.get("context")
        self.query_one("#context", TextArea).text = (
            visible(json.dumps(context, indent=1, ensure_ascii=False))
            if context
            else ""
        )

    def job(self, now: datetime) -> tuple[dict[str, Any], list[str]]:
        """The job the form describes, and the problems only the form can see."""
        problems: list[str] = []
        job: dict[str, Any] = dict(self._extra)
        job["from"] = self._value("from").strip()
        job["to"] = _addresses(self._value("to"))
        for key in ("cc",):
            if values := _addresses(self._value(key)):
                job[key] = values
        for key in ("subject", "template"):
            if value := self._value(key).strip():
                job[key] = value
        if body := self.query_one("#body", TextArea).text:
            job["text"] = body
        context = self.query_one("#context", TextArea).text.strip()
        if context:
            try:
                job["context"] = json.loads(context)
            except json.JSONDecodeError as exc:
                problems.append(f"context: not JSON ({exc.msg} at line {exc.lineno})")
        try:
            if send_at := parse_send_at(self._value("send_at"), now):
                job["send_at"] = send_at
        except ValueError as exc:
            problems.append(f"send_at: {exc}")
        return job, problems

    @on(Input.Changed)
    @on(TextArea.Changed)
    def _changed(self, event: Input.Changed | TextArea.Changed) -> None:
        event.stop()
        self.post_message(self.Changed(self))
