"""``mailconsole demo``: the console on embedded defaults, populated within seconds.

SQLite in a temporary directory (or ``--data-dir``), the local RabbitMQ with a queue
of its own (``mailconsole-demo``, so a real ``mail`` queue on the same broker is left
alone), the capture relay from :mod:`.capture`, short retry delays so retries and
give-ups happen while you watch, and :mod:`.traffic` publishing sample jobs.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from mailconsole.cli.console import host_console
from mailconsole.config import RetrySettings, Settings
from mailconsole.demo.capture import CaptureLog, start_capture
from mailconsole.demo.traffic import Traffic
from mailconsole.engine.clock import Clock

DEMO_QUEUE = "mailconsole-demo"
DEMO_RETRY = RetrySettings(
    max_attempts=4, base_delay=5.0, max_delay=20.0, max_age=900.0
)
"""Retries within seconds and giving up within a minute, so every state shows soon."""


def demo_settings(settings: Settings, data_dir: Path, smtp_port: int) -> Settings:
    """``settings`` pointed at the demo's store, queue and capture relay."""
    smtp = settings.smtp.model_copy(
        update={
            "host": "127.0.0.1",
            "port": smtp_port,
            "tls": "none",
            "username": None,
            "password": None,
            "timeout": 10.0,
            "data_timeout": 30.0,
            "pool_size": 4,
        }
    )
    return settings.model_copy(
        update={
            "database_url": SecretStr(f"sqlite+aiosqlite:///{data_dir / 'demo.db'}"),
            "queue": DEMO_QUEUE,
            "smtp": smtp,
            "retry": DEMO_RETRY,
            "scheduler_interval": 1.0,
            "shutdown_grace": 3.0,
            "concurrency": 8,
        }
    )


@contextlib.contextmanager
def _data_dir(chosen: Path | None) -> Iterator[Path]:
    if chosen is not None:
        chosen.mkdir(parents=True, exist_ok=True)
        yield chosen
        return
    with tempfile.TemporaryDirectory(prefix="mailconsole-demo-") as tmp:
        yield Path(tmp)


async def run_demo(
    settings: Settings,
    *,
    data_dir: Path | None = None,
    rate: float = 1.5,
    read_only: bool = False,
) -> int:
    """Run the demo console until the operator quits.

    Raises:
        BrokerUnavailable: no RabbitMQ at the configured URL (one line, with how to
            start it).
    """
    logging.getLogger("mail.log").setLevel(
        logging.WARNING
    )  # aiosmtpd logs every command
    capture = CaptureLog()
    clock = Clock()
    server, port = await start_capture(capture, clock)
    try:
        with _data_dir(data_dir) as where:
            demo = demo_settings(settings, where, port)

            async def traffic(ops: Any) -> None:
                await Traffic(ops, clock, per_second=rate).run()

            return await host_console(
                demo,
                read_only=read_only,
                capture=capture,
                extra=traffic,
                log_path=where / "console.log",
            )
    finally:
        server.close()
        await server.wait_closed()
