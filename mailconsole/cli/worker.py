"""``mailconsole --no-ui``: the engine as a headless worker until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal

from mailconsole.cli.common import freeze_startup_objects
from mailconsole.config import Settings
from mailconsole.engine.runtime import Engine

log = logging.getLogger(__name__)


async def run_worker(settings: Settings) -> int:
    """Run until a signal; then stop consuming, finish in-flight sends within the
    grace period and leave everything else for redelivery."""
    engine = Engine(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await engine.start()
        freeze_startup_objects()
        await stop.wait()
        log.info("signal received; stopping (grace %ss)", settings.shutdown_grace)
    finally:
        await engine.stop()
    return 0
