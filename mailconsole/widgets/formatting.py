"""Short, stable renderings of times, ages and counts for narrow terminals.

Pure functions of their arguments ("now" is passed in from the injected clock), so a
snapshot taken with a fixed clock never changes. Never formats untrusted text: that
is :mod:`mailconsole.widgets.safe_text`'s job.
"""

from __future__ import annotations

from datetime import UTC, datetime


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def duration(seconds: float | None) -> str:
    """``42s``, ``5m``, ``3h 20m``, ``2d 4h``; ``-`` for ``None``."""
    if seconds is None:
        return "-"
    seconds = abs(int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, _ = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h" if hours else f"{days}d"


def relative(when: datetime | None, now: datetime) -> str:
    """``in 5m``, ``3h 20m ago``, ``now``; ``-`` for ``None``."""
    if when is None:
        return "-"
    delta = (_aware(when) - _aware(now)).total_seconds()
    if abs(delta) < 1:
        return "now"
    return f"in {duration(delta)}" if delta > 0 else f"{duration(delta)} ago"


def clock_time(when: datetime | None) -> str:
    """``2024-05-01 12:03:04Z`` (UTC); ``-`` for ``None``."""
    if when is None:
        return "-"
    return _aware(when).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def count(value: int | None) -> str:
    """``1,234``; ``?`` when unknown (``None``)."""
    return "?" if value is None else f"{value:,}"


def per_minute(values: tuple[int, ...]) -> str:
    """The latest minute's value, or ``0``."""
    return f"{values[-1]:,}/min" if values else "0/min"
