"""End-to-end throughput: RabbitMQ -> engine -> SQLite/PostgreSQL -> SMTP sink.

Publishes N .NET-format messages (about 4 KB each) to a fresh queue, starts one
engine, and reports how long it took until every message was committed as sent.
The sink is Postfix's ``smtp-sink`` when installed (aiosmtpd tops out near 700-800
msgs/s and would measure itself), otherwise an aiosmtpd sink in a subprocess.

    .venv/bin/python bench/throughput.py --messages 5000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aio_pika

from mailconsole.config import Settings
from mailconsole.engine.runtime import Engine

BODY = ("Your order has shipped. " * 170)[:4000]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_sink(port: int) -> tuple[subprocess.Popen[bytes], str]:
    sink = shutil.which("smtp-sink") or (
        "/usr/sbin/smtp-sink" if Path("/usr/sbin/smtp-sink").exists() else None
    )
    if sink:
        cmd = [sink, "-u", "root", f"127.0.0.1:{port}", "1024"]
        return subprocess.Popen(cmd), "postfix smtp-sink"
    code = (
        "import asyncio,sys\n"
        "from aiosmtpd.controller import Controller\n"
        "class H:\n"
        "    async def handle_DATA(self, s, e, env): return '250 OK'\n"
        f"c=Controller(H(), hostname='127.0.0.1', port={port}); c.start()\n"
        "import time\nwhile True: time.sleep(3600)\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code]
    ), "aiosmtpd (install postfix for smtp-sink)"


def wait_port(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"SMTP sink did not start on port {port}")


async def publish(url: str, queue: str, n: int) -> float:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue(queue, durable=True)
        t0 = time.perf_counter()
        for i in range(n):
            body = json.dumps(
                {
                    "SenderName": "Shop",
                    "SenderEmail": "shop@example.com",
                    "RecipientName": f"User {i}",
                    "RecipientEmail": f"user{i}@example.com",
                    "Subject": f"Order {i} shipped",
                    "Content": BODY,
                }
            ).encode()
            await channel.default_exchange.publish(
                aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=queue,
            )
        return time.perf_counter() - t0


async def delete_queue(url: str, queue: str) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(queue)


async def run(args: argparse.Namespace) -> None:
    url = os.environ.get(
        "MAILCONSOLE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"
    )
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    port = free_port()
    sink, sink_name = start_sink(port)
    tmp = tempfile.mkdtemp(prefix="mc-bench-")
    db_url = args.database_url or f"sqlite+aiosqlite:///{tmp}/bench.db"
    try:
        wait_port(port)
        publish_s = await publish(url, queue, args.messages)
        settings = Settings.model_validate(
            {
                "amqp_url": url,
                "queue": queue,
                "database_url": db_url,
                "smtp": {"host": "127.0.0.1", "port": port, "pool_size": args.pool},
                "concurrency": args.concurrency,
                "prefetch": args.prefetch,
                "batch_size": args.batch,
            }
        )
        engine = Engine(settings)
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        await engine.start()
        counters = engine.pipeline.counters
        while counters.sent + counters.dead < args.messages:
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        await engine.stop()
        cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
        print(f"sink:            {sink_name}")
        print(f"store:           {db_url.split(':')[0]}")
        print(
            f"messages:        {args.messages} (sent {counters.sent}, dead {counters.dead})"
        )
        print(
            f"publish:         {publish_s:.2f} s "
            f"({args.messages / publish_s:.0f} msgs/s, confirmed)"
        )
        print(f"deliver:         {elapsed:.2f} s")
        print(f"throughput:      {args.messages / elapsed:.0f} msgs/s")
        print(
            f"engine CPU:      {cpu:.2f} s ({cpu / args.messages * 1000:.2f} ms/message)"
        )
        print(
            "pool/concurrency/prefetch/batch: "
            f"{args.pool}/{args.concurrency}/{args.prefetch}/{args.batch}"
        )
    finally:
        sink.terminate()
        sink.wait()
        await delete_queue(url, queue)
        shutil.rmtree(tmp, ignore_errors=True)


def engine_parser(doc: str, messages: int) -> argparse.ArgumentParser:
    """The flags every engine benchmark takes: how many messages, the engine's
    tuning and the store."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=messages)
    parser.add_argument("--pool", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--prefetch", type=int, default=400)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument(
        "--database-url", help="store URL (default: SQLite in a temp dir)"
    )
    return parser


def main() -> None:
    asyncio.run(run(engine_parser(__doc__, 5000).parse_args()))


if __name__ == "__main__":
    main()
