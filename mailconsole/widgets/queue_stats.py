"""The live queue's figures: depth, in flight, rates, oldest wait, SMTP pool.

Dumb: the screen passes ``Stats`` (and the pool snapshot) in through :meth:`update`
methods; the widgets only lay them out. The pool's last error comes from a remote
server, so it goes through the sanitiser like any other untrusted text.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Label, Sparkline, Static

from mailconsole.engine.ops import Stats
from mailconsole.engine.smtp import PoolStats
from mailconsole.widgets.formatting import count, duration
from mailconsole.widgets.safe_text import safe_text

STATUS_ORDER = ("queued", "sending", "scheduled", "held", "sent", "dead")


def _pair(label: str, value: str) -> Text:
    return Text.assemble((f"{label} ", "dim"), (value, "bold"))


def _line(*pairs: Text) -> Text:
    return Text("  ").join(pairs)


def depth_text(stats: Stats) -> Text:
    """Queue depth, in flight and the oldest wait, three short lines."""
    in_flight = stats.by_status.get("sending", 0)
    return Text("\n").join(
        [
            _line(
                _pair("ready", count(stats.queue_ready)),
                _pair("unacked", count(stats.queue_unacked)),
            ),
            _line(
                _pair("in flight", count(in_flight)),
                _pair("consumers", count(stats.consumers)),
            ),
            _line(_pair("oldest waiting", duration(stats.oldest_waiting_age))),
        ]
    )


def status_text(stats: Stats) -> Text:
    """Messages per status in the store, one line."""
    return _line(*(_pair(s, count(stats.by_status.get(s, 0))) for s in STATUS_ORDER))


def pool_text(pool: PoolStats | None, observing: bool) -> Text:
    """The SMTP pool in one or two lines."""
    if pool is None:
        why = "observing only: no engine here" if observing else "no engine"
        return Text.assemble(("SMTP pool ", "dim"), (why, "italic"))
    text = _line(
        Text("SMTP pool", style="dim"),
        _pair("open", f"{pool.open}/{pool.size}"),
        _pair("busy", str(pool.busy)),
        _pair("idle", str(pool.idle)),
        _pair("sent", count(pool.sent)),
        _pair("failed", count(pool.failed)),
    )
    if pool.last_error:
        text.append("\nlast error ", style="dim")
        text.append_text(safe_text(pool.last_error, single_line=True))
    return text


class RateGraph(Vertical):
    """A label with the latest rate and a sparkline of the last 30 minutes."""

    DEFAULT_CSS = """
    RateGraph { height: 2; }
    RateGraph Sparkline { height: 1; }
    """

    def __init__(
        self, title: str, *, id: str | None = None, classes: str | None = None
    ) -> None:
        super().__init__(id=id, classes=classes)
        self.title = title

    def compose(self) -> ComposeResult:
        yield Label(self.title, classes="rate-label")
        yield Sparkline([0], summary_function=max)

    def show(self, values: tuple[int, ...], last_minute: int, last_hour: int) -> None:
        """Display the per-minute values (oldest first) and the totals."""
        label = self.query_one(".rate-label", Label)
        label.update(
            _line(
                Text(self.title, style="bold"),
                _pair("last min", count(last_minute)),
                _pair("last hour", count(last_hour)),
            )
        )
        self.query_one(Sparkline).data = list(values) or [0]


class QueueStats(Horizontal):
    """Depth and wait on the left, sent and failed rates on the right."""

    DEFAULT_CSS = """
    QueueStats { height: auto; }
    QueueStats #depth { width: 1fr; min-width: 30; height: 3; }
    QueueStats #rates { width: 2fr; height: 4; }
    """

    def compose(self) -> ComposeResult:
        yield Static(Text("loading…", style="dim"), id="depth", markup=False)
        with Vertical(id="rates"):
            yield RateGraph("sent", id="sent-rate")
            yield RateGraph("failed", id="failed-rate")

    def show(self, stats: Stats) -> None:
        """Display one ``Stats`` snapshot."""
        self.query_one("#depth", Static).update(depth_text(stats))
        self.query_one("#sent-rate", RateGraph).show(
            stats.sent_per_minute, stats.sent_last_minute, stats.sent_last_hour
        )
        self.query_one("#failed-rate", RateGraph).show(
            stats.failed_per_minute, stats.failed_last_minute, stats.failed_last_hour
        )
