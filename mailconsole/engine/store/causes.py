"""Failure causes: what one failed message says went wrong, reduced to a group key.

A cause is (reply code, enhanced status code, normalised reply text, recipient
domain). Normalising replaces what varies per message (addresses, queue ids,
numbers) so that "550 5.1.1 <bob@x.com>: user unknown" and the same for alice are
one group, one broken thing. Pure: no I/O, no SQL; :mod:`.cause_index` stores what
it computes when a message fails, and :mod:`.queries` groups those rows.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

_LEADING_CODES = re.compile(r"^\s*(?:\d{3}[ -])?\s*(?:\d\.\d{1,3}\.\d{1,3}\s+)?")
_ADDRESS = re.compile(r"<?[^\s<>@,;:]+@[^\s<>,;:]+>?")
# Letters and digits mixed (queue ids, hashes): a pure number is a count or size,
# which reads better as <n> ("quota <n> exceeded") than as an id.
_TOKEN_WITH_DIGITS = re.compile(
    r"\b(?=[a-z0-9._-]*\d)(?=[a-z0-9._-]*[a-z])[a-z0-9._-]{6,}\b"
)
_NUMBER = re.compile(r"\d+")


Cause = tuple[str, int | None, str | None, str, str]
"""(group key, code, enhanced, normalised reply, domain)."""


@dataclass(frozen=True, slots=True)
class FailureGroup:
    """Failures with one cause: the one broken thing behind many dead messages."""

    key: str
    """Stable id of the group, usable as ``group:<key>`` in a filter."""
    code: int | None
    enhanced: str | None
    reply: str
    """Normalised reply text (addresses, ids and numbers replaced by placeholders)."""
    domain: str
    count: int
    first_seen: datetime
    last_seen: datetime
    example_id: str

    @property
    def label(self) -> str:
        """One line naming the cause: ``550 5.1.1 <addr>: user unknown @ x.com``."""
        codes = " ".join(str(c) for c in (self.code, self.enhanced) if c)
        return f"{codes} {self.reply} @ {self.domain or '?'}".strip()

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "code": self.code,
            "enhanced": self.enhanced,
            "reply": self.reply,
            "domain": self.domain,
            "count": self.count,
            "first_seen": self.first_seen.isoformat(),
            "last_seen": self.last_seen.isoformat(),
            "example_id": self.example_id,
        }


@functools.lru_cache(maxsize=4096)
def normalise_reply(text: str) -> str:
    """Reply text with what varies per message (addresses, ids, numbers) replaced, so
    one broken thing is one group: ``<addr>: recipient address rejected``."""
    out = _LEADING_CODES.sub("", text.strip().lower(), count=1)
    out = _ADDRESS.sub("<addr>", out)
    out = _TOKEN_WITH_DIGITS.sub("<id>", out)
    out = _NUMBER.sub("<n>", out)
    return " ".join(out.split())[:200]


@functools.lru_cache(maxsize=4096)
def group_key(code: int | None, enhanced: str | None, reply: str, domain: str) -> str:
    raw = f"{code or ''}|{enhanced or ''}|{reply}|{domain}"
    return hashlib.sha256(raw.encode()).hexdigest()[:12]


def causes(
    code: int | None,
    enhanced: str | None,
    reply: str | None,
    rcpt_state: dict[str, str] | None,
) -> list[Cause]:
    """(key, code, enhanced, reply, domain) for each domain a message failed for:
    ``reply`` is its last reply (or, with none, its last error)."""
    text = normalise_reply(reply or "")
    state = rcpt_state or {}
    failed = [r for r, s in state.items() if s != "sent"] or list(state)
    domains = sorted({r.rpartition("@")[2].lower() for r in failed}) or [""]
    return [
        (group_key(code, enhanced, text, d), code, enhanced, text, d) for d in domains
    ]
