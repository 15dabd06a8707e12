"""The console while its hosted engine sends at full speed: does it stay responsive?

Publishes N .NET jobs (4 KB) to a fresh queue, opens the console headless at 120x40
the way ``mailconsole`` does (``cli.console.hosted_app``: a started engine, a SQLite
store in a temp dir, Postfix's ``smtp-sink`` or an aiosmtpd sink), and while the
engine drains the queue it switches screens (live, dead, scheduled, live ...) once a
second, timing each switch from the key until the new screen is current, and watches
the event loop for stalls (the longest time the loop could neither draw nor take a
key). It prints the drain time and rate next to the same engine without a console,
the stalls, the full garbage collections and the switch times; it asserts no limits.
``--no-freeze`` leaves out ``gc.freeze()`` of the start-up objects, to compare.

    .venv/bin/python bench/console_load.py --messages 5000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: the other benchmarks live beside it
    sys.path.insert(0, str(ROOT))

from bench.dead_list import Stalls, send  # noqa: E402
from bench.throughput import (  # noqa: E402
    delete_queue,
    free_port,
    publish,
    start_sink,
    wait_port,
)
from mailconsole.app import MailConsoleApp  # noqa: E402
from mailconsole.cli.common import freeze_startup_objects  # noqa: E402
from mailconsole.cli.console import hosted_app  # noqa: E402
from mailconsole.config import Settings  # noqa: E402
from mailconsole.engine.runtime import Engine  # noqa: E402
from mailconsole.screens.dead import DeadScreen  # noqa: E402
from mailconsole.screens.queue import QueueScreen  # noqa: E402
from mailconsole.screens.retries import RetriesScreen  # noqa: E402

TOUR = (("d", DeadScreen), ("s", RetriesScreen), ("l", QueueScreen))


def settings_for(url: str, queue: str, port: int, db_url: str) -> Settings:
    return Settings.model_validate(
        {
            "amqp_url": url,
            "queue": queue,
            "database_url": db_url,
            "smtp": {"host": "127.0.0.1", "port": port},
        }
    )


async def headless(settings: Settings, n: int) -> float:
    """Seconds the engine alone takes to send ``n`` (the baseline)."""
    engine = Engine(settings)
    started = time.perf_counter()
    await engine.start()
    try:
        while engine.pipeline.counters.sent + engine.pipeline.counters.dead < n:
            await asyncio.sleep(0.01)
        return time.perf_counter() - started
    finally:
        await engine.stop()


async def sent_count(app: MailConsoleApp) -> int:
    stats = await app.ctx.ops.stats()
    return stats.by_status.get("sent", 0) + stats.by_status.get("dead", 0)


@dataclass
class Run:
    elapsed: float
    stall: float
    """The longest the event loop was blocked, in seconds."""
    switches: list[float]
    full_collections: list[float]
    """How long each full (generation 2) garbage collection took, in seconds."""


class FullCollections:
    """Times every generation-2 collection while installed (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif info["generation"] == 2:
            self.seconds.append(time.perf_counter() - self._started)


async def with_console(settings: Settings, n: int, freeze: bool) -> Run:
    async with hosted_app(settings, False, False, None) as app:
        if freeze:
            freeze_startup_objects()  # as `mailconsole` does before it runs the app
        started = time.perf_counter()
        async with app.run_test(size=(120, 40)) as pilot:
            stalls, collections = Stalls(), FullCollections()
            stalls.start()
            gc.callbacks.append(collections)
            switches: list[float] = []
            step = 0
            done = 0
            while done < n:
                key, screen = TOUR[step % len(TOUR)]
                step += 1
                sent_at = send(app, key)
                while not isinstance(app.screen, screen):
                    await pilot.pause(0.005)
                switches.append(time.perf_counter() - sent_at)
                await pilot.pause(1.0)
                done = await sent_count(app)
            elapsed = time.perf_counter() - started
            await stalls.stop()
            gc.callbacks.remove(collections)
            return Run(elapsed, stalls.longest, switches, collections.seconds)


def ms(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[int(0.9 * (len(ordered) - 1))]
    return (
        f"median {statistics.median(ordered) * 1000:.0f} ms, "
        f"p90 {p90 * 1000:.0f} ms, max {ordered[-1] * 1000:.0f} ms "
        f"({len(ordered)} switches)"
    )


async def run(args: argparse.Namespace) -> None:
    url = os.environ.get(
        "MAILCONSOLE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"
    )
    port = free_port()
    sink, sink_name = start_sink(port)
    tmp = tempfile.mkdtemp(prefix="mc-console-load-")
    queues: list[str] = []
    try:
        wait_port(port)
        print(f"sink:      {sink_name}; load average {os.getloadavg()[0]:.2f}")
        for label in ("engine alone", "in the console"):
            queue = f"bench-{uuid.uuid4().hex[:8]}"
            queues.append(queue)
            db_url = f"sqlite+aiosqlite:///{tmp}/{queue}.db"
            await publish(url, queue, args.messages)
            settings = settings_for(url, queue, port, db_url)
            if label == "engine alone":
                seconds = await headless(settings, args.messages)
                print(
                    f"{label:15} {args.messages} sent in {seconds:.2f} s "
                    f"({args.messages / seconds:.0f} msgs/s)"
                )
                continue
            out = await with_console(settings, args.messages, not args.no_freeze)
            print(
                f"{label:15} {args.messages} sent in {out.elapsed:.2f} s "
                f"({args.messages / out.elapsed:.0f} msgs/s; checked once a second)"
            )
            print(f"loop stall:     longest {out.stall * 1000:.0f} ms")
            full = out.full_collections
            print(
                f"full GCs:       {len(full)}, longest "
                f"{max(full, default=0) * 1000:.0f} ms"
            )
            print(f"screen switch:  {ms(out.switches)}")
        print(f"load average at the end {os.getloadavg()[0]:.2f}")
    finally:
        sink.terminate()
        sink.wait()
        for queue in queues:
            await delete_queue(url, queue)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--no-freeze", action="store_true")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
