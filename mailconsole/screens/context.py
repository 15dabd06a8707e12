"""What every screen is given: the ops API, the clock and how the console was started.

Built once by the app from its constructor arguments and passed to each screen, so
screens never reach into the app for engine objects and tests can build a screen's
world without a running engine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from mailconsole.engine.clock import Clock
from mailconsole.engine.ops import Ops
from mailconsole.engine.smtp import PoolStats


class CapturedMail(Protocol):
    """One message received by the demo's capture server."""

    @property
    def number(self) -> int: ...
    @property
    def received_at(self) -> datetime: ...
    @property
    def mail_from(self) -> str: ...
    @property
    def rcpt_tos(self) -> tuple[str, ...]: ...
    @property
    def subject(self) -> str: ...
    @property
    def data(self) -> bytes: ...


class CaptureLog(Protocol):
    """The demo's record of captured mail (see ``mailconsole.demo.capture``)."""

    @property
    def version(self) -> int:
        """Grows each time a message is captured."""
        ...

    def latest(self, limit: int) -> Sequence[CapturedMail]: ...
    def get(self, number: int) -> CapturedMail | None: ...


@dataclass(frozen=True)
class ConsoleContext:
    ops: Ops
    clock: Clock
    read_only: bool = False
    """Hide and refuse every mutation."""
    observing: bool = False
    """No engine in this process: only the shared store and broker are watched."""
    pool_stats: Callable[[], PoolStats] | None = None
    """The hosted engine's SMTP pool, when there is one."""
    capture: CaptureLog | None = None
    """The demo's capture server, when running the demo."""
