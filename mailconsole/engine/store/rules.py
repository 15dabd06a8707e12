"""Operator rules: from which state each action may move a message, and to what.

Pure decisions over one row as it is *now* (read under the batch's lock by
:mod:`.admin`): a :class:`Change` to apply, or one line saying why not. The rule
that matters most: a recipient the relay already accepted is never sent to again
unless the operator forces it. No I/O here; :mod:`.admin` applies the changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from mailconsole.engine.store.dto import Status

REPLAYABLE = (Status.DEAD, Status.SCHEDULED, Status.SENT)
HOLDABLE = (Status.QUEUED, Status.SCHEDULED)
DELETABLE = (Status.QUEUED, Status.SCHEDULED, Status.HELD, Status.DEAD)
EDITABLE = (Status.DEAD, Status.HELD)
_WHY = {
    Status.QUEUED: "it is queued already",
    Status.SENDING: "it is being sent right now",
    Status.HELD: "it is held (release it instead)",
    Status.SENT: "it was sent",
    Status.DEAD: "it is dead",
    Status.DELETED: "it was deleted",
    Status.SCHEDULED: "it is scheduled",
}


class RowState(Protocol):
    """The columns the rules look at (a row selected by :mod:`.admin`)."""

    @property
    def id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def rcpt_state(self) -> dict[str, str] | None: ...
    @property
    def possible_duplicate(self) -> bool: ...
    @property
    def held_from(self) -> str | None: ...
    @property
    def next_attempt_at(self) -> datetime | None: ...
    @property
    def has_payload(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class Change:
    """One row's transition: the columns to set, given it is still ``from_status``."""

    id: str
    from_status: str
    values: dict[str, Any]
    publish: bool = False
    """Queued by this change: the caller publishes a ref after the commit."""
    note: dict[str, Any] = field(default_factory=dict)


Decide = Callable[[RowState, datetime], Change | str]
"""Per row: the change to make, or why not (one line for the operator)."""


def why_not(row: RowState, action: str) -> str:
    return f"cannot {action}: {_WHY.get(Status(row.status), row.status)}"


def decide_replay(row: RowState, now: datetime, *, force: bool) -> Change | str:
    """Back to ``queued`` with a fresh attempt count and max age. Recipients the relay
    accepted are never sent again by accident: without ``force`` such a message (or
    one that may have been delivered) is refused; with it only the recipients not
    accepted are retried, unless every one was (then all are sent again)."""
    if row.status not in REPLAYABLE:
        return why_not(row, "replay")
    if not row.has_payload:
        return "cannot replay: it was rejected on arrival; fix it with `edit`"
    state: dict[str, str] = dict(row.rcpt_state or {})
    accepted = [r for r, s in state.items() if s == "sent"]
    if (accepted or row.possible_duplicate) and not force:
        if state and len(accepted) == len(state):
            return "the relay accepted every recipient; use --force to send it again"
        if accepted:
            return (
                f"the relay already accepted it for {len(accepted)} of {len(state)} "
                "recipients; use --force to retry the others"
            )
        return "it may already have been delivered (possible duplicate); use --force"
    if state and len(accepted) == len(state):
        new_state = dict.fromkeys(state, "pending")
    else:
        new_state = {
            r: ("sent" if s == "sent" else "pending") for r, s in state.items()
        }
    values = {
        "status": Status.QUEUED,
        "attempts": 0,
        "rcpt_state": new_state,
        "age_from": now,
        "next_attempt_at": None,
        "queued_at": now,
        "updated_at": now,
        "worker_id": None,
        "held_from": None,
        "possible_duplicate": False,
    }
    resend = sorted(r for r, s in new_state.items() if s == "pending")
    forced = bool(accepted or row.possible_duplicate)
    note = {"recipients": resend, "forced": forced}
    return Change(row.id, row.status, values, publish=True, note=note)


def decide_retry_now(row: RowState, now: datetime) -> Change | str:
    if row.status != Status.SCHEDULED:
        if row.status == Status.HELD:
            return "cannot retry now: it is held (release it first)"
        return why_not(row, "retry now") + "; only scheduled messages wait for a retry"
    values = {"next_attempt_at": now, "updated_at": now}
    note = {"was_due": row.next_attempt_at.isoformat() if row.next_attempt_at else None}
    return Change(row.id, row.status, values, note=note)


def decide_hold(row: RowState, now: datetime) -> Change | str:
    if row.status not in HOLDABLE:
        if row.status == Status.HELD:
            return "it is held already"
        return why_not(row, "hold")
    values = {"status": Status.HELD, "held_from": row.status, "updated_at": now}
    return Change(row.id, row.status, values)


def decide_release(row: RowState, now: datetime) -> Change | str:
    if row.status != Status.HELD:
        return why_not(row, "release") + "; it is not held"
    back = Status.SCHEDULED if row.held_from == Status.SCHEDULED else Status.QUEUED
    if back is Status.SCHEDULED and row.next_attempt_at is None:
        back = Status.QUEUED  # nothing to wait for
    values: dict[str, Any] = {"status": back, "held_from": None, "updated_at": now}
    if back is Status.QUEUED:
        values["queued_at"] = now
    return Change(row.id, row.status, values, publish=back is Status.QUEUED)


def decide_delete(row: RowState, now: datetime) -> Change | str:
    if row.status not in DELETABLE:
        return why_not(row, "delete")
    values = {
        "status": Status.DELETED,
        "held_from": None,
        "next_attempt_at": None,
        "updated_at": now,
    }
    return Change(row.id, row.status, values)


def pending_recipients(change: Change, row: RowState) -> list[str]:
    """Who a change that queues a message would send to (its new recipient state,
    or the row's when the change keeps it, as release does)."""
    state: dict[str, str] = change.values.get("rcpt_state") or dict(
        row.rcpt_state or {}
    )
    return [r for r, s in state.items() if s == "pending"]


def without_suppressed(change: Change, row: RowState, listed: set[str]) -> Change | str:
    """A change that queues a message, minus recipients on the suppression list
    (``listed``, lower-cased): they are marked refused, as on arrival, so no SMTP
    attempt reaches them; with nobody left it is refused. The operator lifts a
    suppression with ``suppress remove`` first when the address works again."""
    if not change.publish:
        return change
    pending = pending_recipients(change, row)
    hit = sorted(r for r in pending if r.lower() in listed)
    if not hit:
        return change
    if len(hit) == len(pending):
        return (
            f"on the suppression list: {', '.join(hit)} "
            "(`mailconsole suppress remove ADDRESS` first)"
        )
    state = dict(change.values.get("rcpt_state") or row.rcpt_state or {})
    state.update(dict.fromkeys(hit, "refused"))
    note = {**change.note, "suppressed": hit}
    if "recipients" in note:
        note["recipients"] = [r for r in note["recipients"] if r not in hit]
    return replace(change, values={**change.values, "rcpt_state": state}, note=note)
