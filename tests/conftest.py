"""Shared fixtures. Service fixtures live in tests/support/services.py."""

from __future__ import annotations

pytest_plugins = ["tests.support.services", "tests.support.engine"]


# --- smtp fixtures ---
# The fault-injecting SMTP server (tests/support/smtp_server.py), started per test.
from collections.abc import Callable, Iterator  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402

from tests.support.smtp_server import FaultySMTPServer  # noqa: E402


@pytest.fixture
def make_smtp_server() -> Iterator[Callable[..., FaultySMTPServer]]:
    """Start ``FaultySMTPServer(**options)`` servers; all are stopped after the test."""
    servers: list[FaultySMTPServer] = []

    def make(**options: Any) -> FaultySMTPServer:
        server = FaultySMTPServer(**options).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def smtp_server(
    make_smtp_server: Callable[..., FaultySMTPServer],
) -> FaultySMTPServer:
    """A plain, well-behaved recording server; add ``Fault``s to ``.faults``."""
    return make_smtp_server()


# --- end smtp fixtures ---
