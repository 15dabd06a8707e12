"""Turn what happened to one attempt into the message's next state. Pure: no I/O.

Applies :mod:`mailconsole.engine.policy` to the per-recipient replies: accepted
recipients are never tried again, transiently refused ones wait for a retry,
permanently refused ones end the message as dead once nothing is pending.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mailconsole.config import RetrySettings
from mailconsole.engine import policy
from mailconsole.engine.smtp import RecipientReply, SendOutcome, SmtpFailure
from mailconsole.engine.store.delivery import Claimed, Result
from mailconsole.engine.store.dto import Status

PENDING, SENT, REFUSED = "pending", "sent", "refused"


@dataclass(frozen=True, slots=True)
class AttemptContext:
    claim: Claimed
    recipients: tuple[str, ...]
    """The addresses tried this time, as keys of ``claim.rcpt_state``."""
    started_at: datetime
    duration_ms: int
    worker_id: str


def _reply_json(reply: RecipientReply, original: str) -> dict[str, Any]:
    return {
        "recipient": original,
        "code": reply.code,
        "enhanced": reply.enhanced,
        "text": reply.text,
    }


def _attempt(ctx: AttemptContext, **cols: Any) -> dict[str, Any]:
    return {
        "number": ctx.claim.attempts + 1,
        "started_at": ctx.started_at,
        "duration_ms": ctx.duration_ms,
        "worker_id": ctx.worker_id,
        "stage": None,
        "code": None,
        "enhanced": None,
        "reply": None,
        "replies": [],
        **cols,
    }


def _originals(ctx: AttemptContext, sent_as: tuple[str, ...]) -> dict[str, str]:
    """The envelope form of each address (punycode) back to the stored form."""
    return dict(zip(sent_as, ctx.recipients, strict=False))


def after_send(
    ctx: AttemptContext,
    outcome: SendOutcome,
    sent_as: tuple[str, ...],
    *,
    now: datetime,
    retry: RetrySettings,
    rng: random.Random,
) -> tuple[Result, list[RecipientReply]]:
    """The relay took the message for some or all recipients.

    Returns the result and the hard bounces (for the suppression list).
    """
    back = _originals(ctx, sent_as)
    state = dict(ctx.claim.rcpt_state)
    replies = [
        _reply_json(r, back.get(r.recipient, r.recipient)) for r in outcome.accepted
    ]
    for reply in outcome.accepted:
        state[back.get(reply.recipient, reply.recipient)] = SENT
    hard: list[RecipientReply] = []
    errors: list[str] = []
    for reply in outcome.refused:
        original = back.get(reply.recipient, reply.recipient)
        replies.append(_reply_json(reply, original))
        verdict = policy.classify_reply(reply.code, reply.enhanced, reply.text)
        state[original] = (
            PENDING if verdict is not policy.Outcome.PERMANENT else REFUSED
        )
        if policy.is_hard_bounce(reply.code, reply.enhanced):
            hard.append(reply)
        errors.append(f"{original}: {reply.code} {reply.text}".strip())
    last = outcome.refused[-1] if outcome.refused else None
    attempt = _attempt(
        ctx,
        outcome="sent" if not outcome.refused else "partial",
        stage="data",
        code=250,
        reply=outcome.data_reply,
        replies=replies,
    )
    if not outcome.refused:
        return _result(ctx, Status.SENT, state, attempt, sent=True), hard
    reason = (
        f"refused by the relay for {len(outcome.refused)} of {len(state)} recipients: "
        + "; ".join(errors)
    )
    return (
        _settle(ctx, state, attempt, reason, last, now=now, retry=retry, rng=rng),
        hard,
    )


def after_failure(
    ctx: AttemptContext,
    failure: SmtpFailure,
    sent_as: tuple[str, ...],
    *,
    now: datetime,
    retry: RetrySettings,
    rng: random.Random,
) -> tuple[Result, list[RecipientReply]]:
    """The transaction failed as a whole (connection, TLS, auth, MAIL, all RCPT, DATA)."""
    back = _originals(ctx, sent_as)
    state = dict(ctx.claim.rcpt_state)
    hard: list[RecipientReply] = []
    replies = []
    for reply in failure.refused:
        original = back.get(reply.recipient, reply.recipient)
        replies.append(_reply_json(reply, original))
        if (
            policy.classify_reply(reply.code, reply.enhanced, reply.text)
            is policy.Outcome.PERMANENT
        ):
            state[original] = REFUSED
        if policy.is_hard_bounce(reply.code, reply.enhanced):
            hard.append(reply)
    permanent = failure.outcome is policy.Outcome.PERMANENT and not failure.refused
    if permanent:
        state = {r: (REFUSED if s == PENDING else s) for r, s in state.items()}
    attempt = _attempt(
        ctx,
        outcome="unknown" if failure.after_data else str(failure.outcome),
        stage=failure.stage,
        code=failure.code,
        enhanced=failure.enhanced,
        reply=failure.text,
        replies=replies,
    )
    reason = policy.describe_failure(failure)
    result = _settle(
        ctx,
        state,
        attempt,
        reason,
        failure,
        now=now,
        retry=retry,
        rng=rng,
        possible_duplicate=failure.after_data,
    )
    return result, hard


def _settle(
    ctx: AttemptContext,
    state: dict[str, str],
    attempt: dict[str, Any],
    reason: str,
    last: RecipientReply | SmtpFailure | None,
    *,
    now: datetime,
    retry: RetrySettings,
    rng: random.Random,
    possible_duplicate: bool = False,
) -> Result:
    """Retry what is still pending, or end the message as dead."""
    attempts = ctx.claim.attempts + 1
    code = getattr(last, "code", None)
    enhanced = getattr(last, "enhanced", None)
    text = getattr(last, "text", None)
    if PENDING in state.values():
        due = policy.next_attempt_at(
            attempts=attempts,
            created_at=ctx.claim.created_at,
            now=now,
            retry=retry,
            rng=rng,
        )
        if due is not None:
            return Result(
                ctx.claim.id,
                Status.SCHEDULED,
                attempts,
                state,
                due,
                reason,
                code,
                enhanced,
                text,
                ctx.claim.possible_duplicate or possible_duplicate,
                False,
                attempt,
            )
        reason = policy.gave_up_reason(attempts, ctx.claim.created_at, now, reason)
    return Result(
        ctx.claim.id,
        Status.DEAD,
        attempts,
        state,
        None,
        reason,
        code,
        enhanced,
        text,
        ctx.claim.possible_duplicate or possible_duplicate,
        False,
        attempt,
    )


def _result(
    ctx: AttemptContext,
    status: Status,
    state: dict[str, str],
    attempt: dict[str, Any],
    *,
    sent: bool,
) -> Result:
    return Result(
        ctx.claim.id,
        status,
        ctx.claim.attempts + 1,
        state,
        None,
        None,
        None,
        None,
        attempt.get("reply"),
        ctx.claim.possible_duplicate,
        sent,
        attempt,
    )


def rejected(claim: Claimed, reason: str) -> Result:
    """The message can never be sent as it is (bad payload, template error, size)."""
    state = {r: (REFUSED if s == PENDING else s) for r, s in claim.rcpt_state.items()}
    return Result(
        claim.id,
        Status.DEAD,
        claim.attempts,
        state,
        None,
        reason,
        None,
        None,
        None,
        claim.possible_duplicate,
        False,
        None,
    )
