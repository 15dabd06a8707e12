"""Logging for the worker and the CLI: text or JSON lines on stderr, secrets redacted.

Secrets are registered once from the settings; every record's final text is scrubbed
of them (and of their base64 forms, which AUTH PLAIN/LOGIN traces would show).
"""

from __future__ import annotations

import base64
import json
import logging
import sys
from datetime import UTC, datetime

from mailconsole.config import Settings


class _Redactor(logging.Filter):
    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if len(s) >= 3]

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        scrubbed = text
        for secret in self.secrets:
            scrubbed = scrubbed.replace(secret, "********")
        if scrubbed != text:
            record.msg, record.args = scrubbed, None
        return True


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def secrets_of(settings: Settings) -> list[str]:
    found = []
    if settings.smtp.password is not None:
        found.append(settings.smtp.password.get_secret_value())
    urls = [settings.amqp_url, settings.database_url, settings.amqp_management_url]
    for url in filter(None, urls):
        rest = url.get_secret_value().partition("://")[2]
        creds = rest.rpartition("@")[0]
        if ":" in creds:
            found.append(creds.partition(":")[2])
    encoded = []
    for secret in found:
        encoded.append(base64.b64encode(secret.encode()).decode())
        if settings.smtp.username:
            pair = f"\0{settings.smtp.username}\0{secret}".encode()
            encoded.append(base64.b64encode(pair).decode())
    return found + encoded


def configure(
    settings: Settings, *, stream: object = None, quiet: bool = False
) -> None:
    """Log to stderr. ``quiet`` (one-shot commands) keeps the AMQP libraries' own
    connection errors out, since the command reports the failure in one line."""
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    if settings.log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
    handler.addFilter(_Redactor(secrets_of(settings)))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    for noisy in ("aiormq", "aio_pika", "aiosqlite", "sqlalchemy.engine"):
        level = logging.CRITICAL if quiet else max(logging.WARNING, root.level)
        logging.getLogger(noisy).setLevel(level)
