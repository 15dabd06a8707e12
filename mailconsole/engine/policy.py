"""Delivery policy: what an SMTP reply means, when to try again, when to give up.

Pure functions only: no I/O, no clock (``now`` is passed in), no randomness of its
own (a ``random.Random`` is passed in), no logging. The SMTP pool and the scheduler
call these; tests drive them with tables. This module must not import the network,
store or UI layers.
"""

from __future__ import annotations

import math
import random
import re
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final, Literal, Protocol

from mailconsole.config import RetrySettings

Stage = Literal["connect", "tls", "auth", "mail", "rcpt", "data", "unknown"]
"""Where an SMTP transaction failed. ``connect``/``tls``/``auth`` are about the
session with the relay, ``mail``/``rcpt``/``data`` about this message."""


class Outcome(StrEnum):
    """What a failure means for the message."""

    TRANSIENT = "transient"
    """Try again later."""
    PERMANENT = "permanent"
    """Trying again cannot help: the message is dead."""
    CONFIG = "config"
    """The relay or our settings are wrong (auth, TLS, relaying denied). Retried
    later like a transient failure, so fixing the setting recovers the queue, but
    surfaced loudly: retrying alone will not fix it."""


_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})(?!\S)")
_AUTH_CODES: Final = frozenset({530, 534, 535, 538})
# RFC 3463 / RFC 4954 / RFC 7504 details that mean "our credentials or our TLS".
_CONFIG_ENHANCED: Final = frozenset({"5.7.8", "5.7.9", "5.7.10", "5.7.11", "5.7.14"})
_TLS_WORD = re.compile(r"\b(?:START)?TLS\b|\bencryption\b", re.IGNORECASE)
_RELAY_DENIED = re.compile(r"relay(?:ing)? (?:access )?(?:denied|not permitted)", re.I)
_SESSION_STAGES: Final = frozenset({"connect", "tls", "auth"})
# x.1.1 no such mailbox, x.1.2 no such domain, x.1.3 bad syntax, x.1.6 moved,
# x.1.10 null MX (RFC 7505): the address itself can never receive mail.
_HARD_BOUNCE: Final = frozenset({"5.1.1", "5.1.2", "5.1.3", "5.1.6", "5.1.10"})
_RANK: Final = {Outcome.TRANSIENT: 0, Outcome.CONFIG: 1, Outcome.PERMANENT: 2}


def parse_enhanced(text: str) -> str | None:
    """The RFC 3463 enhanced status code at the start of a reply text.

    ``"5.1.1 <x>: Recipient address rejected"`` gives ``"5.1.1"``; text without one
    gives ``None``.
    """
    match = _ENHANCED.match(text)
    return ".".join(match.groups()) if match else None


def classify_reply(
    code: int | None, enhanced: str | None = None, text: str = ""
) -> Outcome:
    """Classify one SMTP reply (or its absence) for the message it was about.

    Args:
        code: the basic reply code; ``None`` when no reply came (connection refused
            or lost, timeout), which is always worth another try.
        enhanced: the RFC 3463 code, if the relay sent one.
        text: the reply text, used for the few cases only words distinguish.

    Returns:
        4xx (and any non-error code where an error was expected, a confused relay)
        is transient; 5xx is permanent, except authentication codes, RFC 3463
        credential/encryption details, "TLS required" policy replies and
        "relay access denied", which are configuration problems, and 552 with
        x.5.3 (too many recipients), which RFC 5321 §4.5.3.1.10 says to treat as
        temporary.
    """
    if code is None or code < 500:
        return Outcome.TRANSIENT
    if code in _AUTH_CODES or enhanced in _CONFIG_ENHANCED:
        return Outcome.CONFIG
    if enhanced is not None and enhanced.startswith("5.7."):
        if _TLS_WORD.search(text) or _RELAY_DENIED.search(text):
            return Outcome.CONFIG
    elif _RELAY_DENIED.search(text):
        return Outcome.CONFIG
    if code == 552 and enhanced == "5.5.3":
        return Outcome.TRANSIENT
    return Outcome.PERMANENT


def classify(
    stage: Stage, code: int | None, enhanced: str | None, text: str
) -> Outcome:
    """Classify a failure knowing where in the session it happened.

    A refusal while opening the session (greeting, TLS, login) says nothing about
    this message, so it never kills it: a 5xx there, and any reply refusing TLS or
    AUTH, is a configuration problem. 421 ("closing, try later") stays transient,
    as do lost connections and timeouts anywhere.
    """
    outcome = classify_reply(code, enhanced, text)
    if stage not in _SESSION_STAGES or code is None or code == 421:
        return outcome
    if outcome is Outcome.PERMANENT or stage in ("tls", "auth"):
        return Outcome.CONFIG
    return outcome


def most_hopeful(outcomes: list[Outcome]) -> int:
    """Index of the outcome that leaves the most hope (transient, config, permanent).

    Used when every recipient was refused: if any refusal was transient the message
    is worth retrying. Ties go to the first. ``outcomes`` must not be empty.
    """
    return min(range(len(outcomes)), key=lambda i: _RANK[outcomes[i]])


def is_hard_bounce(code: int | None, enhanced: str | None) -> bool:
    """Whether a reply to RCPT says the address can never receive mail.

    Only permanent replies with an RFC 3463 "bad address" detail count (no such
    mailbox, no such domain, bad syntax, moved, null MX): a bare 550 is too often a
    policy or reputation refusal to put an address on the suppression list. Apply
    it to replies to RCPT only; x.1.x at MAIL is about our sender address.
    """
    if code is not None and not 500 <= code <= 599:
        return False
    return enhanced in _HARD_BOUNCE


def backoff_delay(
    attempt: int, *, base: float, cap: float, rng: random.Random
) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1 for the first).

    Full jitter (AWS architecture blog, "Exponential Backoff and Jitter") over a
    doubling ceiling ``min(cap, base * 2**(attempt-1))``, so many messages failing
    together at one relay outage do not come back together. The draw starts at a
    floor of a tenth of the ceiling rather than at zero: an instant retry against a
    relay that just refused us is hammering, not backing off.

    Raises:
        ValueError: ``attempt`` below 1, or a non-positive ``base``/``cap``.
    """
    if attempt < 1 or base <= 0 or cap <= 0:
        raise ValueError(f"bad backoff arguments: {attempt=} {base=} {cap=}")
    # 2**63 overflows nothing and is already far past any cap.
    ceiling = min(cap, math.ldexp(base, min(attempt - 1, 63)))
    return rng.uniform(ceiling / 10, ceiling)


def next_attempt_at(
    *,
    attempts: int,
    created_at: datetime,
    now: datetime,
    retry: RetrySettings,
    rng: random.Random,
) -> datetime | None:
    """When to try again after ``attempts`` failed attempts, or ``None`` to give up.

    Gives up once ``retry.max_attempts`` attempts were made, or when the next try
    would fall after ``created_at + retry.max_age`` (application mail is stale by
    then; see :class:`RetrySettings`). Datetimes must be timezone-aware (UTC).

    Raises:
        ValueError: ``attempts`` below 1 (there is nothing to retry yet).
    """
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    if attempts >= retry.max_attempts:
        return None
    delay = backoff_delay(attempts, base=retry.base_delay, cap=retry.max_delay, rng=rng)
    due = now + timedelta(seconds=delay)
    if due > created_at + timedelta(seconds=retry.max_age):
        return None
    return due


# --- human_reason -----------------------------------------------------------------

_SUBJECT_HINTS: Final = {
    "1.1": "no such mailbox; fix the address",
    "1.2": "no such domain; fix the address",
    "1.3": "bad address syntax; fix the address",
    "1.6": "mailbox has moved; get the new address",
    "1.7": "bad sender address; check the From address",
    "1.8": "sender's domain refused; check the From address",
    "1.10": "the domain accepts no mail; fix the address",
    "2.1": "mailbox disabled",
    "2.2": "mailbox full; the recipient must make room",
    "3.4": "message too big for the relay; shrink it or raise the relay's limit",
    "5.3": "too many recipients; the rest go in a later transaction",
    "7.1": "refused by the relay's policy; ask its administrator",
    "7.8": "wrong credentials; check MAILCONSOLE_SMTP_USERNAME and _PASSWORD",
}
_CLASS_HINTS: Final = {
    "1": "address problem",
    "2": "mailbox problem",
    "3": "relay system problem",
    "4": "network or routing problem",
    "5": "protocol problem between us and the relay",
    "6": "message content problem",
    "7": "security or policy refusal; ask the relay's administrator",
}
_CODE_HINTS: Final = {
    421: "the relay is closing the connection; will retry",
    530: "the relay wants a login; set MAILCONSOLE_SMTP_USERNAME and _PASSWORD",
    535: "wrong credentials; check MAILCONSOLE_SMTP_USERNAME and _PASSWORD",
    552: "storage exceeded",
    553: "mailbox name not allowed; fix the address",
}
_STAGE_PREFIX: Final = {
    "connect": "relay refused the connection",
    "tls": "TLS with the relay failed",
    "auth": "relay refused our login",
    "mail": "sender refused",
    "rcpt": "recipient refused",
    "data": "message refused",
    "unknown": "send failed",
}
_NO_REPLY_PREFIX: Final = {
    "connect": "relay unreachable",
    "tls": "TLS with the relay failed",
    "auth": "login to the relay failed",
}
_STAGE_HINT_NO_REPLY: Final = {
    "connect": "check MAILCONSOLE_SMTP_HOST or the relay",
    "tls": "check MAILCONSOLE_SMTP_TLS, _CA_FILE and _VERIFY",
}
_SPACE = re.compile(r"\s+")
_MAX_TEXT = 300


def _one_line(text: str) -> str:
    # Multi-line replies and control characters must not break a log line or a
    # table cell; the console still shows this through its own sanitiser.
    flat = _SPACE.sub(" ", "".join(ch if ch.isprintable() else " " for ch in text))
    flat = flat.strip()
    return flat if len(flat) <= _MAX_TEXT else flat[: _MAX_TEXT - 1] + "…"


def _hint(code: int | None, enhanced: str | None) -> str | None:
    if enhanced is not None:
        klass, _, detail = enhanced.partition(".")
        if klass == "4" and detail.startswith("7."):
            return None  # 4.7.x is greylisting or rate limiting: retrying is the fix
        return _SUBJECT_HINTS.get(detail) or _CLASS_HINTS.get(detail.split(".")[0])
    return _CODE_HINTS.get(code) if code is not None else None


def _reply(code: int | None, enhanced: str | None, text: str) -> str:
    body = _one_line(text)
    if enhanced is not None and parse_enhanced(body) is None:
        body = f"{enhanced} {body}".strip()
    return f"{code} {body}".strip() if code is not None else body


def _span(elapsed: timedelta) -> str:
    seconds = max(0, int(elapsed.total_seconds()))
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"


def human_reason(
    *,
    stage: Stage,
    code: int | None,
    enhanced: str | None = None,
    text: str = "",
    after_data: bool = False,
) -> str:
    """One line an on-call human can act on.

    Args:
        stage: where it failed.
        code, enhanced, text: the relay's reply, or ``code=None`` and a description
            of what went wrong (``"connection refused to relay:25"``) in ``text``.
        after_data: no reply came after the whole message was sent.

    Returns:
        For example ``"recipient refused: 550 5.1.1 <bob@x.com>: user unknown (no
        such mailbox; fix the address)"`` or ``"relay unreachable: connection
        refused to smtp.example.com:25 (check MAILCONSOLE_SMTP_HOST or the relay)"``.
    """
    enhanced = enhanced or parse_enhanced(text)
    reply = _reply(code, enhanced, text)
    if after_data:
        return (
            f"no reply after the message was sent: {reply} (it may have been "
            "delivered; a retry may duplicate it)"
        )
    if code is None:
        prefix = _NO_REPLY_PREFIX.get(stage, "connection to the relay failed")
        hint = _STAGE_HINT_NO_REPLY.get(stage)
    else:
        prefix = _STAGE_PREFIX[stage]
        hint = _hint(code, enhanced)
    return f"{prefix}: {reply}" + (f" ({hint})" if hint else "")


class FailureLike(Protocol):
    """What :func:`describe_failure` reads (``smtp.SmtpFailure`` has it)."""

    stage: Stage
    code: int | None
    enhanced: str | None
    text: str
    after_data: bool


def describe_failure(failure: FailureLike) -> str:
    """:func:`human_reason` for a failed transaction."""
    return human_reason(
        stage=failure.stage,
        code=failure.code,
        enhanced=failure.enhanced,
        text=failure.text,
        after_data=failure.after_data,
    )


def gave_up_reason(
    attempts: int, created_at: datetime, now: datetime, last: str
) -> str:
    """Why a message ended dead with retries left undone, e.g. ``"gave up after 10
    attempts over 1 day: message refused: 451 4.7.1 greylisted"``.

    Args:
        attempts: attempts made, the last one included.
        created_at, now: the message's age is the span between them.
        last: the reason the last attempt failed (:func:`describe_failure`).
    """
    tries = f"{attempts} attempt{'s' if attempts != 1 else ''}"
    return f"gave up after {tries} over {_span(now - created_at)}: {_one_line(last)}"
