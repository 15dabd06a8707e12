"""Soak: N messages at a steady rate through a real worker, with relay faults.

Publishes N extended jobs (default 50,000) to a fresh queue at a steady rate, runs
one headless worker process (``mailconsole --no-ui``) against a SQLite store and the
fault-injecting SMTP server of the test suite, which answers 5 % of DATA commands
with ``451`` and drops 1 % of connections in the middle of DATA. At the end it
prints the ledger (published / delivered / duplicated / dead / pending / lost) and
the worker's resident memory at the start, the middle and the end.

    .venv/bin/python bench/soak.py                      # 50,000 at 250 msgs/s
    .venv/bin/python bench/soak.py --messages 5000 --rate 500

The chaos suite runs a smaller soak (tests/chaos/test_soak.py) through :func:`run`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import aio_pika

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: the test support code lives in tests/
    sys.path.insert(0, str(ROOT))

from mailconsole.engine.store.db import Database  # noqa: E402
from tests.chaos.ledger import Ledger, compute, job, settle  # noqa: E402
from tests.support.smtp_server import Fault, FaultySMTPServer  # noqa: E402
from tests.support.worker import start_worker, worker_env  # noqa: E402

AMQP_URL = os.environ.get(
    "MAILCONSOLE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"
)


@dataclass
class SoakResult:
    ledger: Ledger
    rss_kib: dict[str, int]
    publish_seconds: float
    total_seconds: float
    transient_replies: int
    mid_data_drops: int

    def show(self) -> None:
        rss = ", ".join(f"{k} {v / 1024:.1f} MiB" for k, v in self.rss_kib.items())
        print(
            f"soak: published in {self.publish_seconds:.1f}s, all settled in "
            f"{self.total_seconds:.1f}s; {self.transient_replies} transient replies, "
            f"{self.mid_data_drops} mid-DATA drops"
        )
        print(f"soak: worker RSS {rss}")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


SOAK_SETTINGS = {
    "SMTP_TIMEOUT": "10",
    "SMTP_POOL_SIZE": "8",
    "RETRY_BASE_DELAY": "0.2",
    "RETRY_MAX_DELAY": "2",
    "RETRY_MAX_ATTEMPTS": "20",
    "SCHEDULER_INTERVAL": "0.1",
    "CONCURRENCY": "16",
}
"""The worker's settings for the soak (``MAILCONSOLE_`` names): retries within
seconds, the rest at their defaults."""


async def publish_steadily(
    url: str, queue: str, keys: list[str], rate: float, halfway: asyncio.Event
) -> float:
    connection = await aio_pika.connect(url)
    t0 = time.monotonic()
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(queue, durable=True)
        tick = 0.05
        per_tick = max(1, round(rate * tick))
        for start in range(0, len(keys), per_tick):
            batch = keys[start : start + per_tick]
            await asyncio.gather(
                *(
                    channel.default_exchange.publish(
                        aio_pika.Message(
                            json.dumps(job(k, to=f"{k}@example.com")).encode(),
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        ),
                        routing_key=queue,
                    )
                    for k in batch
                )
            )
            if start + per_tick >= len(keys) // 2:
                halfway.set()
            due = t0 + (start + per_tick) / rate
            await asyncio.sleep(max(0.0, due - time.monotonic()))
    return time.monotonic() - t0


async def run(
    messages: int,
    rate: float,
    *,
    transient: float = 0.05,
    drops: float = 0.01,
    amqp_url: str = AMQP_URL,
    workdir: Path | None = None,
    settle_timeout: float | None = None,
) -> SoakResult:
    tmp = tempfile.TemporaryDirectory(prefix="soak-") if workdir is None else None
    where = workdir or Path(tmp.name)  # type: ignore[union-attr]
    queue = f"mail-soak-{uuid.uuid4().hex[:8]}"
    db_url = f"sqlite+aiosqlite:///{where}/store.db"
    server = FaultySMTPServer(
        faults=[
            Fault(
                "data", reply="451 4.3.0 soak: try again", fraction=transient, seed=5
            ),
            Fault("data_body", drop=True, fraction=drops, seed=7),
        ]
    ).start()
    worker = start_worker(
        worker_env(amqp_url, queue, db_url, server.port, SOAK_SETTINGS),
        where / "worker.log",
    )
    db = Database(db_url)
    keys = [f"soak-{i}" for i in range(messages)]
    rss: dict[str, int] = {}
    t0 = time.monotonic()
    try:
        await asyncio.sleep(2)  # the worker creates the store and starts consuming
        rss["start"] = rss_kib(worker.pid)
        halfway = asyncio.Event()
        publisher = asyncio.create_task(
            publish_steadily(amqp_url, queue, keys, rate, halfway)
        )
        await halfway.wait()
        rss["middle"] = rss_kib(worker.pid)
        publish_seconds = await publisher
        await settle(keys, db, timeout=settle_timeout or max(120.0, messages / 50))
        rss["end"] = rss_kib(worker.pid)
        ledger = await compute(
            f"soak-{messages}", keys, server, db, started=t0, rate=rate
        )
        ledger.notes["rss_mib"] = {k: round(v / 1024, 1) for k, v in rss.items()}
        return SoakResult(
            ledger,
            rss,
            publish_seconds,
            time.monotonic() - t0,
            server.faults[0].hits,
            server.faults[1].hits,
        )
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(60)
        except subprocess.TimeoutExpired:
            worker.kill()
        await db.dispose()
        server.stop()
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel()
            await channel.queue_delete(queue)
        if tmp is not None:
            tmp.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--rate", type=float, default=250.0, help="messages a second")
    parser.add_argument("--transient", type=float, default=0.05)
    parser.add_argument("--drops", type=float, default=0.01)
    args = parser.parse_args()
    result = asyncio.run(
        run(args.messages, args.rate, transient=args.transient, drops=args.drops)
    )
    result.ledger.show()
    result.show()
    ok = result.ledger.lost == 0 and result.ledger.duplicated == 0
    ok = ok and result.ledger.pending == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
