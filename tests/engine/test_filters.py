"""The filter language: text in, Filter out, clear errors with a column."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mailconsole.engine.errors import MailconsoleError
from mailconsole.engine.filters import (
    NO_STATUS,
    Filter,
    FilterError,
    parse,
    parse_time,
    quote,
    term,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", Filter()),
        ("status:dead", Filter(statuses=("dead",))),
        ("status:dead,held status:dead", Filter(statuses=("dead", "held"))),
        ("status:waiting", Filter(statuses=("queued", "scheduled", "held"))),
        ("STATUS:Dead", Filter(statuses=("dead",))),
        ("stauts:dead", None),
        ("to:@Example.com", Filter(domains=("example.com",))),
        ("to:example.com", Filter(domains=("example.com",))),
        ("to:Bob@Example.com", Filter(to=("bob@example.com",))),
        ("domain:@x.org,y.org", Filter(domains=("x.org", "y.org"))),
        ("from:@shop.example", Filter(senders=("@shop.example",))),
        ("code:550", Filter(codes=((550, 550),))),
        ("code:5xx,45x", Filter(codes=((500, 599), (450, 459)))),
        ("enhanced:5.1.1", Filter(enhanced=("5.1.1",))),
        ("enhanced:5.7", Filter(enhanced=("5.7",))),
        ("enhanced:5.x.x", Filter(enhanced=("5",))),
        ("since:2h", Filter(since=timedelta(hours=2))),
        (
            "since:1d12h until:30m",
            Filter(since=timedelta(hours=36), until=timedelta(minutes=30)),
        ),
        ("until:2026-12-01", Filter(until=datetime(2026, 12, 1, tzinfo=UTC))),
        ("id:m-1,m-2", Filter(ids=("m-1", "m-2"))),
        ("group:abcdef123456", Filter(groups=("abcdef123456",))),
        ("dup:yes", Filter(duplicate=True)),
        ("dup:no", Filter(duplicate=False)),
        ('text:"mailbox full" invoice', Filter(text=("mailbox full", "invoice"))),
        ('"re: order" 12:30', Filter(text=("re: order", "12:30"))),
        (r'text:"say \"hi\""', Filter(text=('say "hi"',))),
    ],
)
def test_queries_parse_to_filters(text: str, expected: Filter | None) -> None:
    if expected is None:
        with pytest.raises(FilterError):
            parse(text)
        return
    assert parse(text) == expected


@pytest.mark.parametrize(
    ("text", "column", "words"),
    [
        ("status:dead stauts:held", 13, "unknown key 'stauts'"),
        ("status:gone", 1, "unknown status"),
        ("to:bob", 1, "expected an address"),
        ("code:600", 1, "reply code"),
        ("code:55", 1, "reply code"),
        ("enhanced:6.1.1", 1, "enhanced status code"),
        ("since:yesterday", 1, "duration"),
        ("dup:maybe", 1, "yes or no"),
        ("group:XYZ!", 1, "group key"),
        ('a "unterminated', 3, "unterminated quote"),
        ("status:", 1, "needs a value"),
        ("id:a,,b", 1, "empty value"),
    ],
)
def test_bad_queries_say_where_and_why(text: str, column: int, words: str) -> None:
    with pytest.raises(FilterError) as caught:
        parse(text)
    assert caught.value.position == column - 1
    assert f"column {column}" in str(caught.value) and words in str(caught.value)
    assert isinstance(caught.value, MailconsoleError)
    assert "\n" not in str(caught.value)


def test_the_source_text_is_kept_but_does_not_affect_equality() -> None:
    parsed = parse("status:dead  to:@x.com")
    assert parsed.source == "status:dead  to:@x.com"
    assert parsed == parse("to:@x.com status:dead")


def test_with_statuses_intersects_or_sets() -> None:
    assert parse("").with_statuses(("dead",)).statuses == ("dead",)
    assert parse("status:dead,held").with_statuses(("held", "queued")).statuses == (
        "held",
    )
    # Nothing in common matches nothing; () would mean "any status".
    assert parse("status:sent").with_statuses(("dead",)).statuses == NO_STATUS


@pytest.mark.parametrize(
    "value", ["plain", "two words", 'a "quote"', "back\\slash", ""]
)
def test_quoted_values_round_trip(value: str) -> None:
    assert parse(term("text", value) if value else "").text == (
        (value,) if value else ()
    )
    assert quote(value) == value or quote(value).startswith('"')


def test_times_are_ages_or_utc_moments() -> None:
    assert parse_time("90s") == timedelta(seconds=90)
    assert parse_time("1w") == timedelta(days=7)
    assert parse_time("2026-12-03T10:00") == datetime(2026, 12, 3, 10, tzinfo=UTC)
    assert parse_time("2026-12-03T10:00+02:00") == datetime(2026, 12, 3, 8, tzinfo=UTC)
