"""SQLAlchemy table models: the durable record of every message, attempt and operator action.

Only ``store/`` touches these classes; everything outside it receives the frozen DTOs
of :mod:`mailconsole.engine.store.dto`. Types are portable across SQLite, PostgreSQL
and MySQL/MariaDB: no JSONB, no arrays, no database-specific defaults.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes stored as naive UTC, the only form every backend keeps alike."""

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime())

    def process_bind_param(
        self, value: datetime | None, dialect: Dialect
    ) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(
        self, value: datetime | None, dialect: Dialect
    ) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


# MySQL's TEXT holds 64 KB; payloads with attachments need more.
BigText = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
BigBinary = LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")


class Base(DeclarativeBase):
    pass


class MessageRow(Base):
    """One message, from acceptance to its end (sent, dead or deleted)."""

    __tablename__ = "messages"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    status: Mapped[str] = mapped_column(String(16))
    source_format: Mapped[str] = mapped_column(String(16))
    payload: Mapped[str | None] = mapped_column(BigText)
    """The canonical extended JSON of the job; ``None`` when the input was malformed."""
    raw_body: Mapped[bytes | None] = mapped_column(BigBinary)
    """The input exactly as received, kept only when it could not be parsed."""
    body_sha256: Mapped[str | None] = mapped_column(String(64))
    sender: Mapped[str] = mapped_column(String(320), default="")
    recipients: Mapped[str] = mapped_column(Text, default="")
    """Comma-separated envelope recipients (display and text search)."""
    rcpt_state: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    """recipient -> pending | sent | refused: a retry sends only to the pending ones."""
    subject: Mapped[str] = mapped_column(String(1000), default="")
    priority: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_code: Mapped[int | None] = mapped_column(Integer)
    last_enhanced: Mapped[str | None] = mapped_column(String(16))
    last_reply: Mapped[str | None] = mapped_column(Text)
    worker_id: Mapped[str | None] = mapped_column(String(64))
    possible_duplicate: Mapped[bool] = mapped_column(Boolean, default=False)
    held_from: Mapped[str | None] = mapped_column(String(16))
    """The waiting state a held message returns to on release."""
    edited_from: Mapped[str | None] = mapped_column(String(40))
    duplicates: Mapped[int] = mapped_column(Integer, default=0)
    """Deliveries of this message seen again after it was accepted (not sent again)."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    first_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    queued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    age_from: Mapped[datetime | None] = mapped_column(UTCDateTime)
    """Where the retry max age counts from after an operator replay restarted it;
    ``None`` means ``created_at`` (migration 0002)."""

    __table_args__ = (
        Index("ix_messages_status_due", "status", "next_attempt_at"),
        # Newest-first lists of one status (dead, held ...) page off this index.
        Index("ix_messages_status_created", "status", "created_at"),
        Index("ix_messages_status_updated", "status", "updated_at"),
        Index("ix_messages_created", "created_at"),
        Index("ix_messages_body_sha256", "body_sha256"),
        Index("ix_messages_edited_from", "edited_from"),
    )


class RecipientRow(Base):
    """Envelope recipients, one row each, so "mail to this domain" is an index look-up."""

    __tablename__ = "message_recipients"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    )
    message_id: Mapped[str] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE")
    )
    address: Mapped[str] = mapped_column(String(320))
    domain: Mapped[str] = mapped_column(String(255))

    __table_args__ = (
        Index("ix_recipients_address", "address"),
        Index("ix_recipients_domain", "domain"),
        Index("ix_recipients_message", "message_id"),
    )


class CauseRow(Base):
    """The failure causes of a failed message (see :mod:`.cause_index`), one row for
    each recipient domain it failed for, written with the failure itself: grouping
    100,000 dead messages by cause is then a GROUP BY, not a pass over every row."""

    __tablename__ = "message_causes"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    )
    message_id: Mapped[str] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE")
    )
    key: Mapped[str] = mapped_column(String(12))
    code: Mapped[int | None] = mapped_column(Integer)
    enhanced: Mapped[str | None] = mapped_column(String(16))
    reply: Mapped[str] = mapped_column(String(200))
    """The reply text normalised (addresses, ids and numbers as placeholders)."""
    domain: Mapped[str] = mapped_column(String(255))

    __table_args__ = (
        Index("ix_causes_key", "key"),
        Index("ix_causes_message", "message_id"),
    )


class AttemptRow(Base):
    """One SMTP transaction for one message."""

    __tablename__ = "attempts"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    )
    message_id: Mapped[str] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE")
    )
    number: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    duration_ms: Mapped[int] = mapped_column(Integer)
    worker_id: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))
    """sent | partial | transient | permanent | config | unknown"""
    stage: Mapped[str | None] = mapped_column(String(16))
    code: Mapped[int | None] = mapped_column(Integer)
    enhanced: Mapped[str | None] = mapped_column(String(16))
    reply: Mapped[str | None] = mapped_column(Text)
    replies: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    """Per recipient: {"recipient", "code", "enhanced", "text"}."""

    __table_args__ = (
        Index("ix_attempts_message", "message_id", "number"),
        # Sent/failed per minute and hour (stats) are range counts over this index.
        Index("ix_attempts_started", "started_at", "outcome"),
    )


class AuditRow(Base):
    """An operator action: who, when, what, on which messages, why."""

    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(32))
    message_id: Mapped[str | None] = mapped_column(String(40))
    filter: Mapped[str | None] = mapped_column(Text)
    count: Mapped[int] = mapped_column(Integer, default=1)
    reason: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    __table_args__ = (
        Index("ix_audit_message", "message_id"),
        Index("ix_audit_at", "at"),
    )


class WorkerRow(Base):
    """A running engine, so others can tell when it died and recover its sends."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class SuppressionRow(Base):
    """An address mail is never sent to (hard bounces, complaints, operator choice)."""

    __tablename__ = "suppressions"

    address: Mapped[str] = mapped_column(String(320), primary_key=True)
    reason: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
