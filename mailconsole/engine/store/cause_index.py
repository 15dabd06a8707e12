"""The failure-cause index: the causes of each failed message, kept in
``message_causes`` as the failure is written.

Computing causes (a normalised reply per failed recipient domain) at query time meant
a Python pass over every dead message on each grouping: 1.6 s, with the console's
loop blocked for most of it, at 100,000. Done once per failure instead, grouping is a
SQL GROUP BY and ``group:KEY`` an index look-up. Rows describe a message's *latest*
failure: they are replaced when it fails again and removed when an operator queues it
again; queries join them to messages by status, so rows of a message that has since
been sent or queued are never counted as failures.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import delete, insert
from sqlalchemy.ext.asyncio import AsyncSession

from mailconsole.engine.store.causes import causes
from mailconsole.engine.store.dto import Status
from mailconsole.engine.store.models import CauseRow

FAILED = (Status.DEAD, Status.SCHEDULED)


def cause_rows(
    message_id: str,
    status: str,
    code: int | None,
    enhanced: str | None,
    reply: str | None,
    error: str | None,
    rcpt_state: dict[str, str] | None,
) -> list[dict[str, Any]]:
    """The index rows of one message; none unless it failed (a message scheduled
    for a later ``send_at``, with no error, has no cause)."""
    if status not in FAILED or not (code or reply or error):
        return []
    return [
        {
            "message_id": message_id,
            "key": key,
            "code": c,
            "enhanced": e,
            "reply": text,
            "domain": domain[:255],
        }
        for key, c, e, text, domain in causes(
            code, enhanced, reply or error, rcpt_state
        )
    ]


def cause_rows_of(message: Mapping[Any, Any]) -> list[dict[str, Any]]:
    """The index rows of a ``messages`` row given as a mapping of its columns (bulk
    inserts, the migration's backfill)."""
    return cause_rows(
        message["id"],
        message["status"],
        message.get("last_code"),
        message.get("last_enhanced"),
        message.get("last_reply"),
        message.get("last_error"),
        message.get("rcpt_state"),
    )


async def write(
    session: AsyncSession,
    rows: Iterable[dict[str, Any]],
    *,
    replacing: Sequence[str] = (),
) -> None:
    """Insert ``rows`` after removing those of the messages in ``replacing``."""
    if replacing:
        await session.execute(
            delete(CauseRow).where(CauseRow.message_id.in_(list(replacing)))
        )
    batch = list(rows)
    if batch:
        await session.execute(insert(CauseRow), batch)
