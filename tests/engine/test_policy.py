"""Table tests for the pure policy: classification, backoff, expiry, reasons."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailconsole.config import RetrySettings
from mailconsole.engine import policy
from mailconsole.engine.policy import Outcome

T, P, C = Outcome.TRANSIENT, Outcome.PERMANENT, Outcome.CONFIG


@pytest.mark.parametrize(
    ("code", "text", "expected"),
    [
        (421, "4.4.2 idle too long, closing", T),
        (450, "4.2.0 mailbox busy", T),
        (451, "4.7.1 greylisted, try again in 5 minutes", T),
        (452, "4.5.3 too many recipients", T),
        (500, "5.5.2 syntax error", P),
        (550, "5.1.1 <bob@x.test>: Recipient address rejected: user unknown", P),
        (552, "5.3.4 message size exceeds fixed limit", P),
        (552, "5.5.3 too many recipients", T),  # RFC 5321 §4.5.3.1.10
        (553, "5.1.3 malformed address", P),
        (554, "5.7.1 message rejected as spam", P),
        (554, "5.7.1 <bob@x.test>: Relay access denied", C),
        (530, "5.7.0 Must issue a STARTTLS command first", C),
        (534, "5.7.9 authentication mechanism too weak", C),
        (535, "5.7.8 Authentication credentials invalid", C),
        (538, "5.7.11 Encryption required for requested authentication mechanism", C),
        (550, "5.7.1 TLS required for this sender", C),
        (550, "5.7.8 credentials invalid", C),
        (None, "", T),
        (250, "2.0.0 ok where an error was expected", T),
    ],
)
def test_classify_reply(code: int | None, text: str, expected: Outcome) -> None:
    assert policy.classify_reply(code, policy.parse_enhanced(text), text) is expected


@pytest.mark.parametrize(
    ("stage", "code", "text", "expected"),
    [
        ("connect", 554, "5.7.1 no SMTP service for you", C),
        ("connect", 421, "4.3.2 too busy", T),
        ("connect", None, "connection refused", T),
        ("tls", 454, "4.7.0 TLS not available", C),
        ("tls", None, "timed out", T),
        ("auth", 535, "5.7.8 bad credentials", C),
        ("auth", 454, "4.7.0 temporary authentication failure", C),
        ("auth", 421, "4.4.2 closing", T),
        ("mail", 550, "5.1.8 sender domain does not exist", P),
        ("rcpt", 452, "4.2.2 mailbox full", T),
        ("data", 554, "5.6.0 message content rejected", P),
        ("data", None, "no reply to the final dot", T),
    ],
)
def test_classify_by_stage(
    stage: policy.Stage, code: int | None, text: str, expected: Outcome
) -> None:
    assert policy.classify(stage, code, policy.parse_enhanced(text), text) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5.1.1 <x>: Recipient address rejected", "5.1.1"),
        ("4.7.1 greylisted", "4.7.1"),
        ("5.1.10 null MX", "5.1.10"),
        ("  2.0.0 Ok: queued as ABC", "2.0.0"),
        ("5.1.1<x> no space after the code", None),
        ("User unknown", None),
        ("3.1.1 not a status class", None),
        ("", None),
    ],
)
def test_parse_enhanced(text: str, expected: str | None) -> None:
    assert policy.parse_enhanced(text) == expected


@pytest.mark.parametrize(
    ("code", "enhanced", "expected"),
    [
        (550, "5.1.1", True),
        (550, "5.1.2", True),
        (553, "5.1.3", True),
        (550, "5.1.10", True),
        (551, "5.1.6", True),
        (550, None, False),  # a bare 550 is too often policy or reputation
        (550, "5.7.1", False),
        (552, "5.2.2", False),  # mailbox full is not "no such user"
        (450, "4.1.1", False),
        (451, "5.1.1", False),  # the basic code wins: not permanent
    ],
)
def test_is_hard_bounce(code: int, enhanced: str | None, expected: bool) -> None:
    assert policy.is_hard_bounce(code, enhanced) is expected


def test_most_hopeful_prefers_transient_then_config() -> None:
    assert policy.most_hopeful([P, T, C, T]) == 1
    assert policy.most_hopeful([P, C]) == 1
    assert policy.most_hopeful([P, P]) == 0


@pytest.mark.parametrize(
    ("attempt", "low", "high"),
    [(1, 30.0, 300.0), (2, 60.0, 600.0), (4, 240.0, 2400.0), (5, 400.0, 4000.0)],
)
def test_backoff_bounds_double_then_cap(attempt: int, low: float, high: float) -> None:
    rng = random.Random(7)
    draws = [
        policy.backoff_delay(attempt, base=300, cap=4000, rng=rng) for _ in range(500)
    ]
    assert low <= min(draws) and max(draws) <= high
    assert max(draws) - min(draws) > (high - low) / 2  # really jittered


@given(attempt=st.integers(1, 10_000), seed=st.integers(0, 2**32))
def test_backoff_never_exceeds_cap_nor_reaches_zero(attempt: int, seed: int) -> None:
    delay = policy.backoff_delay(attempt, base=5, cap=60, rng=random.Random(seed))
    assert 0 < delay <= 60


def test_backoff_is_repeatable_with_a_seed() -> None:
    def draw() -> list[float]:
        rng = random.Random(42)
        return [policy.backoff_delay(3, base=1, cap=10, rng=rng) for _ in range(5)]

    assert draw() == draw()


@pytest.mark.parametrize("attempt", [0, -1])
def test_backoff_rejects_attempt_below_one(attempt: int) -> None:
    with pytest.raises(ValueError):
        policy.backoff_delay(attempt, base=1, cap=10, rng=random.Random())


NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
RETRY = RetrySettings.model_validate(
    {"max_attempts": 5, "base_delay": 60, "max_delay": 600, "max_age": 3600}
)


def _next(attempts: int, age: float) -> datetime | None:
    return policy.next_attempt_at(
        attempts=attempts,
        created_at=NOW - timedelta(seconds=age),
        now=NOW,
        retry=RETRY,
        rng=random.Random(1),
    )


def test_next_attempt_is_within_the_backoff_window() -> None:
    due = _next(2, age=0)
    assert due is not None
    assert NOW + timedelta(seconds=12) <= due <= NOW + timedelta(seconds=120)


def test_next_attempt_gives_up_at_max_attempts() -> None:
    assert _next(4, age=0) is not None
    assert _next(5, age=0) is None
    assert _next(9, age=0) is None


def test_next_attempt_gives_up_when_the_next_try_passes_max_age() -> None:
    assert _next(1, age=3000) is not None  # at most 60 s more: inside the hour
    assert _next(4, age=3599) is None  # 60..600 s more: past the hour
    assert _next(1, age=3601) is None  # already too old


def test_next_attempt_needs_an_attempt() -> None:
    with pytest.raises(ValueError):
        _next(0, age=0)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        (
            {
                "stage": "rcpt",
                "code": 550,
                "text": "5.1.1 <bob@x.com>: user unknown",
            },
            "recipient refused: 550 5.1.1 <bob@x.com>: user unknown "
            "(no such mailbox; fix the address)",
        ),
        (
            {
                "stage": "connect",
                "code": None,
                "text": "connection refused to smtp.example.com:25",
            },
            "relay unreachable: connection refused to smtp.example.com:25 "
            "(check MAILCONSOLE_SMTP_HOST or the relay)",
        ),
        (
            {"stage": "rcpt", "code": 452, "enhanced": "4.2.2", "text": "over quota"},
            "recipient refused: 452 4.2.2 over quota "
            "(mailbox full; the recipient must make room)",
        ),
        (
            {"stage": "data", "code": 451, "text": "4.7.1 greylisted"},
            "message refused: 451 4.7.1 greylisted",
        ),
        (
            {"stage": "mail", "code": 552, "text": "5.3.4 message too big"},
            "sender refused: 552 5.3.4 message too big "
            "(message too big for the relay; shrink it or raise the relay's limit)",
        ),
        (
            {"stage": "rcpt", "code": 452, "text": "4.5.3 too many recipients"},
            "recipient refused: 452 4.5.3 too many recipients "
            "(too many recipients; the rest go in a later transaction)",
        ),
        (
            {"stage": "rcpt", "code": 554, "text": "5.4.4 unable to route"},
            "recipient refused: 554 5.4.4 unable to route (network or routing problem)",
        ),
        (
            {"stage": "auth", "code": 535, "text": "5.7.8 nope"},
            "relay refused our login: 535 5.7.8 nope "
            "(wrong credentials; check MAILCONSOLE_SMTP_USERNAME and _PASSWORD)",
        ),
        (
            {"stage": "data", "code": None, "text": "timed out", "after_data": True},
            "no reply after the message was sent: timed out "
            "(it may have been delivered; a retry may duplicate it)",
        ),
        (
            {"stage": "rcpt", "code": 550, "text": "line one\nline\ttwo\x1b[31m"},
            "recipient refused: 550 line one line two [31m",
        ),
    ],
)
def test_human_reason(kwargs: dict[str, object], expected: str) -> None:
    assert policy.human_reason(**kwargs) == expected  # type: ignore[arg-type]


def test_human_reason_is_one_bounded_line() -> None:
    reason = policy.human_reason(stage="data", code=554, text="x" * 5000 + "\r\ny")
    assert "\n" not in reason and "\r" not in reason
    assert len(reason) < 400


class _Failure:
    stage: policy.Stage = "rcpt"
    code: int | None = 450
    enhanced: str | None = "4.2.1"
    text = "4.2.1 mailbox disabled for now"
    after_data = False


def test_describe_failure_and_gave_up_reason() -> None:
    reason = policy.describe_failure(_Failure())
    assert reason == (
        "recipient refused: 450 4.2.1 mailbox disabled for now (mailbox disabled)"
    )
    created = NOW - timedelta(days=1, hours=2)
    assert policy.gave_up_reason(
        10, created, NOW, "message refused: 451 4.7.1 grey"
    ) == ("gave up after 10 attempts over 1 day: message refused: 451 4.7.1 grey")
    assert policy.gave_up_reason(1, NOW - timedelta(minutes=5), NOW, "x") == (
        "gave up after 1 attempt over 5 minutes: x"
    )
