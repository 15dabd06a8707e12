"""A job or a stored message rendered for display: headers, text, HTML source, size.

Uses the same :class:`Renderer` as the delivery path, so ``show`` and the compose
preview display what the relay gets. Part of :mod:`.ops`; pure apart from reading
templates: it must not touch the store or the broker, and returns problems as text
in ``Preview.errors`` instead of raising.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from typing import Any

from mailconsole.config import Settings
from mailconsole.engine.ids import new_message_id
from mailconsole.engine.render import Renderer, RenderError
from mailconsole.engine.store.dto import MessageDetail
from mailconsole.engine.wire import MailJob, WireError, parse_job

_PARSER = email.parser.BytesParser(policy=email.policy.default)


@dataclass(frozen=True, slots=True)
class Preview:
    """The rendered message as it would be sent (compose form, ``send --dry-run``)."""

    headers: tuple[tuple[str, str], ...]
    text: str | None
    html: str | None
    size: int
    errors: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        return {
            "headers": [list(h) for h in self.headers],
            "text": self.text,
            "html": self.html,
            "size": self.size,
            "errors": list(self.errors),
        }


def of_job(settings: Settings, job: Mapping[str, Any], now: datetime) -> Preview:
    """A job being composed, as it would be sent now."""
    try:
        parsed = parse_job(json.dumps(dict(job)).encode())
    except WireError as exc:
        return _failed(str(exc))
    return _render(settings, parsed, new_message_id(), now)


def of_stored(settings: Settings, detail: MessageDetail) -> Preview:
    """A stored message with its own Message-ID and Date, as its next attempt is."""
    if detail.payload is None:
        return _failed("rejected on arrival: there is no valid job to render")
    try:
        parsed = parse_job(json.dumps(detail.payload).encode())
    except WireError as exc:  # stored before a stricter parser: still worth showing
        return _failed(f"the stored job no longer validates: {exc}")
    summary = detail.summary
    return _render(settings, parsed, summary.id, summary.created_at)


def _render(
    settings: Settings, job: MailJob, message_id: str, date: datetime
) -> Preview:
    try:
        renderer = Renderer(
            templates_dir=settings.templates_dir,
            message_id_domain=settings.message_id_domain,
            max_size=settings.smtp.max_message_size,
        )
        # SMTPUTF8 assumed available: this is for reading, not for sending.
        out = renderer.render(
            job, message_id=message_id, date=date, smtputf8_available=True
        )
    except (RenderError, ValueError) as exc:
        return _failed(f"cannot be rendered: {exc}")
    message = _PARSER.parsebytes(out.data)
    headers = tuple((name, str(value)) for name, value in message.items())
    return Preview(
        headers,
        _body(message, "plain"),
        _body(message, "html"),
        len(out.data),
    )


def _body(message: EmailMessage, kind: str) -> str | None:
    part = message.get_body(preferencelist=(kind,))
    if part is None:
        return None
    try:
        content = part.get_content()
    except (LookupError, ValueError) as exc:  # an unknown charset: show why
        return f"[cannot decode the {kind} part: {exc}]"
    if not isinstance(content, str):
        return None
    # The wire form ends lines with CRLF; a reader wants lines, not a CR on each.
    return content.replace("\r\n", "\n")


def _failed(reason: str) -> Preview:
    return Preview((), None, None, 0, (reason,))
