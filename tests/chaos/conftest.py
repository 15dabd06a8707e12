"""Fixtures of the chaos scenarios: an engine per test plus the ledger around it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest

from mailconsole.config import Settings
from mailconsole.engine.runtime import Engine
from mailconsole.engine.store.db import Database
from tests.chaos.ledger import Ledger, compute, encode, job, settle
from tests.support.engine import publish_raw
from tests.support.smtp_server import FaultySMTPServer
from tests.support.tcp_proxy import TcpProxy


@dataclass
class Scenario:
    """Publishes tagged jobs for one test and computes its ledger at the end."""

    name: str
    amqp_url: str
    queue: str
    keys: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    async def publish(
        self,
        n: int,
        *,
        prefix: str = "j",
        to: Callable[[int], str | Sequence[str]] | None = None,
        amqp_url: str | None = None,
        **extra: Any,
    ) -> list[str]:
        start = len(self.keys)
        jobs = [
            job(
                f"{self.name}-{prefix}{i}",
                to=to(i) if to is not None else f"u{i}@example.com",
                **extra,
            )
            for i in range(start, start + n)
        ]
        await publish_raw(
            amqp_url or self.amqp_url, self.queue, encode(jobs), persistent=True
        )
        keys = [j["id"] for j in jobs]
        self.keys.extend(keys)
        return keys

    async def ledger(
        self,
        server: FaultySMTPServer,
        db: Database,
        *,
        timeout: float = 60.0,
        **notes: Any,
    ) -> Ledger:
        await settle(self.keys, db, timeout=timeout)
        notes = {k: v() if callable(v) else v for k, v in notes.items()}
        ledger = await compute(
            self.name, self.keys, server, db, started=self.started, **notes
        )
        return ledger.show()


@pytest.fixture
def scenario(
    request: pytest.FixtureRequest, amqp_url: str, queue_name: str
) -> Scenario:
    name = request.node.originalname.removeprefix("test_")[:48]
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None:
        name += f"[{callspec.id}]"
    return Scenario(name, amqp_url, queue_name)


def patient(**over: Any) -> dict[str, Any]:
    """Retry settings that outlast an outage of half a minute or more."""
    retry = {"max_attempts": 200, "base_delay": 0.05, "max_delay": 1.0, "max_age": 300}
    return {"retry": retry | over}


@pytest.fixture
async def proxy(amqp_url: str) -> AsyncIterator[TcpProxy]:
    parts = urlsplit(amqp_url)
    p = await TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5672).start()
    yield p
    await p.stop()


def via(proxy: TcpProxy, amqp_url: str) -> str:
    parts = urlsplit(amqp_url)
    return amqp_url.replace(f"{parts.hostname}:{parts.port}", f"127.0.0.1:{proxy.port}")


Start = Callable[[Settings], Awaitable[Engine]]
Make = Callable[..., Settings]
