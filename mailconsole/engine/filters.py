"""The filter language of the console and the CLI: query text in, a :class:`Filter` out.

    status:dead to:@example.com code:550 since:2h text:"mailbox full" invoice

Terms are separated by spaces. ``key:value`` terms narrow by a field; a bare word or
a "quoted phrase" is a text search. Several values of one key (repeated, or
comma-separated) are alternatives; different keys and text terms must all match.
docs/filters.md is the user's reference; keep it in step with ``KEYS``.

This module is pure: no I/O, no clock (``since:2h`` stays relative until the store
resolves it against the injected "now"), no SQLAlchemy. The store layer
(:mod:`mailconsole.engine.store.queries`) turns a :class:`Filter` into where-clauses.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from mailconsole.engine.errors import MailconsoleError
from mailconsole.engine.store.dto import WAITING, Status

TimeBound = datetime | timedelta
"""An absolute UTC time, or an age ("2h" ago) resolved against now by the store."""

KEYS = (
    "status",
    "id",
    "to",
    "domain",
    "from",
    "code",
    "enhanced",
    "since",
    "until",
    "text",
    "group",
    "dup",
)
NO_STATUS = ("none",)
"""A status condition no message meets (no state is called that)."""
_STATUS_ALIASES = {"waiting": tuple(str(s) for s in WAITING)}
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(?:\d+[smhdw])+")
_DURATION_PART = re.compile(r"(\d+)([smhdw])")
_CODE = re.compile(r"[2-5][0-9x][0-9x]")
_ENHANCED = re.compile(r"[245](?:\.(?:\d{1,3}|x)){0,2}")
_GROUP = re.compile(r"[0-9a-f]{4,40}")
_KEY = re.compile(r"([A-Za-z_]+):")
_YES, _NO = {"yes", "true", "1", "y"}, {"no", "false", "0", "n"}


class FilterError(MailconsoleError):
    """Query text that does not parse; ``position`` is the 0-based offset of a term."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"bad filter at column {position + 1}: {message}")
        self.position = position


@dataclass(frozen=True, slots=True)
class Filter:
    """A parsed query. Empty tuples mean "no condition on this field"."""

    statuses: tuple[str, ...] = ()
    ids: tuple[str, ...] = ()
    to: tuple[str, ...] = ()
    """Exact envelope recipients, lower-cased."""
    domains: tuple[str, ...] = ()
    """Recipient domains, lower-cased (``to:@example.com`` and ``domain:``)."""
    senders: tuple[str, ...] = ()
    """Exact sender addresses, or ``@domain`` for any sender at that domain."""
    codes: tuple[tuple[int, int], ...] = ()
    """Inclusive ranges of the last reply code (``5xx`` is 500..599)."""
    enhanced: tuple[str, ...] = ()
    """Enhanced status codes; fewer than three parts (``5.1``) match as a prefix."""
    since: TimeBound | None = None
    until: TimeBound | None = None
    text: tuple[str, ...] = ()
    """Each must occur in the recipients, subject, id or last error."""
    groups: tuple[str, ...] = ()
    """Failure group keys, as listed by ``failures``."""
    duplicate: bool | None = None
    source: str = field(default="", compare=False)
    """The query text this was parsed from (for the audit)."""

    @property
    def empty(self) -> bool:
        return self == Filter()

    def with_statuses(self, statuses: tuple[str, ...]) -> Filter:
        """This filter limited to ``statuses`` (intersected with its own, if any).

        An empty intersection (``hold`` asked for ``status:sent``) matches nothing:
        it must not fall back to "no condition on the status"."""
        if not self.statuses:
            return replace(self, statuses=statuses)
        both = tuple(s for s in self.statuses if s in statuses)
        return replace(self, statuses=both or NO_STATUS)


@dataclass(slots=True)
class _Token:
    key: str | None
    value: str
    position: int


def quote(value: str) -> str:
    """``value`` as one filter term's value: quoted when it holds spaces or quotes."""
    if value and not re.search(r'[\s"\\]', value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def term(key: str, value: str) -> str:
    """One ``key:value`` term, the value quoted as needed (CLI flags -> query text)."""
    return f"{key}:{quote(value)}"


def parse(text: str) -> Filter:
    """Parse query text.

    Raises:
        FilterError: an unknown key, a bad value or an unterminated quote, with the
            column where it starts.
    """
    builder = _Builder()
    for token in _tokens(text):
        key = token.key or "text"
        handler = _HANDLERS.get(key)
        if handler is None:
            raise FilterError(
                f"unknown key {key!r} (known: {', '.join(KEYS)}); "
                'to search for the word itself, put it in quotes: "' + key + ':..."',
                token.position,
            )
        if not token.value:
            raise FilterError(f"{key}: needs a value", token.position)
        try:
            handler(builder, token.value)
        except ValueError as exc:
            raise FilterError(f"{key}:{token.value}: {exc}", token.position) from None
    return builder.build(text)


def _tokens(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        start = i
        key = None
        match = _KEY.match(text, i)
        if match is not None:
            key, i = match.group(1).lower(), match.end()
        value, i = _value(text, i)
        tokens.append(_Token(key, value, start))
    return tokens


def _value(text: str, i: int) -> tuple[str, int]:
    """Read a quoted or bare value starting at ``i``; returns it and the next offset."""
    if i < len(text) and text[i] == '"':
        out: list[str] = []
        j = i + 1
        while j < len(text):
            char = text[j]
            if char == "\\" and j + 1 < len(text):
                out.append(text[j + 1])
                j += 2
            elif char == '"':
                return "".join(out), j + 1
            else:
                out.append(char)
                j += 1
        raise FilterError("unterminated quote", i)
    j = i
    while j < len(text) and not text[j].isspace():
        j += 1
    return text[i:j], j


def _split(value: str) -> list[str]:
    parts = [p.strip() for p in value.split(",")]
    if not all(parts):
        raise ValueError("empty value in a comma-separated list")
    return parts


@dataclass(slots=True)
class _Builder:
    """Values gathered term by term; :meth:`build` freezes them into a Filter."""

    statuses: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    to: list[str] = field(default_factory=list)
    domains: list[str] = field(default_factory=list)
    senders: list[str] = field(default_factory=list)
    codes: list[tuple[int, int]] = field(default_factory=list)
    enhanced: list[str] = field(default_factory=list)
    since: TimeBound | None = None
    until: TimeBound | None = None
    text: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    duplicate: bool | None = None

    def build(self, source: str) -> Filter:
        return Filter(
            statuses=_unique(self.statuses),
            ids=_unique(self.ids),
            to=_unique(self.to),
            domains=_unique(self.domains),
            senders=_unique(self.senders),
            codes=tuple(dict.fromkeys(self.codes)),
            enhanced=_unique(self.enhanced),
            since=self.since,
            until=self.until,
            text=tuple(self.text),
            groups=_unique(self.groups),
            duplicate=self.duplicate,
            source=source,
        )


def _unique(items: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def _status(b: _Builder, value: str) -> None:
    known = [str(s) for s in Status]
    for part in _split(value.lower()):
        if part in _STATUS_ALIASES:
            b.statuses.extend(_STATUS_ALIASES[part])
        elif part in known:
            b.statuses.append(part)
        else:
            raise ValueError(f"unknown status (one of {', '.join(known)}, waiting)")


def _recipient(b: _Builder, value: str) -> None:
    for part in _split(value.lower()):
        if part.startswith("@") and len(part) > 1:
            b.domains.append(part[1:])
        elif "@" in part.strip("@"):
            b.to.append(part)
        elif "." in part:
            b.domains.append(part)
        else:
            raise ValueError("expected an address, @domain or domain")


def _domain(b: _Builder, value: str) -> None:
    b.domains.extend(p.lstrip("@") for p in _split(value.lower()))


def _sender(b: _Builder, value: str) -> None:
    for part in _split(value.lower()):
        if "@" not in part:
            raise ValueError("expected an address or @domain")
        b.senders.append(part)


def _code(b: _Builder, value: str) -> None:
    for part in _split(value.lower()):
        if not _CODE.fullmatch(part):
            raise ValueError("expected a reply code such as 550, 55x or 4xx")
        b.codes.append((int(part.replace("x", "0")), int(part.replace("x", "9"))))


def _enhanced(b: _Builder, value: str) -> None:
    for part in _split(value.lower()):
        if not _ENHANCED.fullmatch(part):
            raise ValueError("expected an enhanced status code such as 5.1.1 or 5.7")
        b.enhanced.append(part.split(".x", 1)[0])


def parse_time(value: str) -> TimeBound:
    """``2h``, ``1d12h``, ``90s`` (an age) or an ISO date/time (naive means UTC).

    Raises:
        ValueError: neither form.
    """
    if _DURATION.fullmatch(value):
        seconds = sum(int(n) * _UNITS[u] for n, u in _DURATION_PART.findall(value))
        return timedelta(seconds=seconds)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            "expected a duration (30m, 2h, 7d) or an ISO date/time"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _since(b: _Builder, value: str) -> None:
    # The last one wins: "since:7d since:2h" reads as a correction.
    b.since = parse_time(value)


def _until(b: _Builder, value: str) -> None:
    b.until = parse_time(value)


def _group(b: _Builder, value: str) -> None:
    for part in _split(value.lower()):
        if not _GROUP.fullmatch(part):
            raise ValueError("expected a group key as listed by `mailconsole failures`")
        b.groups.append(part)


def _dup(b: _Builder, value: str) -> None:
    lowered = value.lower()
    if lowered not in _YES | _NO:
        raise ValueError("expected yes or no")
    b.duplicate = lowered in _YES


def _ids(b: _Builder, value: str) -> None:
    b.ids.extend(_split(value))


def _text(b: _Builder, value: str) -> None:
    b.text.append(value)


_HANDLERS: dict[str, Callable[[_Builder, str], None]] = {
    "status": _status,
    "id": _ids,
    "to": _recipient,
    "domain": _domain,
    "from": _sender,
    "code": _code,
    "enhanced": _enhanced,
    "since": _since,
    "until": _until,
    "text": _text,
    "group": _group,
    "dup": _dup,
}
