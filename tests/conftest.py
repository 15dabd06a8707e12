"""Shared fixtures. Service fixtures live in tests/support/services.py, engine ones in
tests/support/engine.py; the fault-injecting SMTP server in tests/support/smtp_server.py."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.smtp_server import FaultySMTPServer

pytest_plugins = ["tests.support.services", "tests.support.engine"]


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """Commands run in-process (``cli.main``) point the root logger at the stderr of
    their test; a server thread logging after that test would write to a closed
    stream. Each test gets the root logger back as it found it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


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
