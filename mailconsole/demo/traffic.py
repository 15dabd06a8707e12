"""Sample traffic for the demo: a burst at start, then a steady trickle of jobs that
exercise every path (delivered, greylisted then delivered, bounced, mailbox full,
retried until given up, sent later, a subject full of markup).

Jobs go through ``ops.send`` like any producer's, onto the demo's queue. For the
demo only: addresses use reserved example domains.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from mailconsole.engine.clock import Clock
from mailconsole.engine.errors import MailconsoleError
from mailconsole.engine.ops import Ops

log = logging.getLogger(__name__)

NAMES = ("ann", "bob", "chen", "dara", "eve", "femi", "gus", "hana", "ivo", "jo")
SENDER = "Demo Shop <shop@example.com>"
# (share, recipient template, subject template)
KINDS: tuple[tuple[float, str, str], ...] = (
    (0.62, "{name}{n}@example.com", "Your order #{n} has shipped"),
    (0.08, "greylist{n}@example.net", "Sign-in code {n}"),
    (0.08, "bounce{n}@example.org", "Welcome aboard, {name}"),
    (0.05, "full{n}@example.com", "Invoice {n} is ready"),
    (0.05, "flaky{n}@example.net", "Password reset for {name}"),
    (0.07, "{name}{n}@example.com", "Reminder: your trial ends soon ({n})"),
    (
        0.05,
        "{name}{n}@example.com",
        "[bold]Sale[/bold] [@click=app.quit]50% off[/] #{n}",
    ),
)
LATER_SHARE = 0.07
"""Jobs sent with ``send_at`` a few minutes ahead (the Scheduled screen)."""


def make_job(n: int, rng: random.Random, clock: Clock) -> dict[str, Any]:
    """The ``n``-th demo job."""
    pick = rng.random()
    rcpt, subject = KINDS[-1][1:]
    for share, kind_rcpt, kind_subject in KINDS:
        pick -= share
        if pick <= 0:
            rcpt, subject = kind_rcpt, kind_subject
            break
    name = rng.choice(NAMES)
    job: dict[str, Any] = {
        "from": SENDER,
        "to": [rcpt.format(name=name, n=n)],
        "subject": subject.format(name=name.capitalize(), n=n),
        "text": f"Hello {name.capitalize()},\n\nThis is demo message {n}.\n\n-- Demo Shop\n",
        "html": f"<p>Hello {name.capitalize()},</p><p>This is demo message <b>{n}</b>.</p>",
    }
    if rng.random() < LATER_SHARE:
        job["send_at"] = (
            clock.now() + timedelta(minutes=rng.randint(2, 15))
        ).isoformat()
    return job


class Traffic:
    """Publishes demo jobs until cancelled."""

    def __init__(
        self,
        ops: Ops,
        clock: Clock,
        *,
        burst: int = 40,
        per_second: float = 1.5,
        seed: int = 42,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.ops = ops
        self.clock = clock
        self.burst = burst
        self.per_second = per_second
        self.rng = random.Random(seed)
        self.sent = 0
        self.on_error = on_error

    async def send_one(self) -> None:
        self.sent += 1
        try:
            await self.ops.send(make_job(self.sent, self.rng, self.clock))
        except MailconsoleError as exc:
            log.warning("demo traffic: %s", exc)
            if self.on_error is not None:
                self.on_error(str(exc))

    async def run(self) -> None:
        """The burst, then about ``per_second`` jobs a second, forever."""
        for _ in range(self.burst):
            await self.send_one()
        while True:
            await asyncio.sleep(self.rng.expovariate(self.per_second))
            await self.send_one()
