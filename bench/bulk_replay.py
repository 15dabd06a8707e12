"""Bulk replay of N dead messages with a live engine: how long to plan, to replay,
and until every one was delivered; and proof that each arrived exactly once.

Seeds N dead messages (550 5.1.1, ten recipient domains) into a fresh store, starts
one engine on a fresh queue, then does what an operator does: ``plan`` (the count,
domains and causes shown before a bulk action), ``replay`` (every dead message back
to queued and published by reference, batch by batch) and waits until the store
says all are sent. The SMTP sink runs in a subprocess and writes the Message-ID of
every message it accepts to a file, so deliveries are counted at the receiving end.

    .venv/bin/python bench/bulk_replay.py --messages 10000
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: the other benchmarks live beside it
    sys.path.insert(0, str(ROOT))

from bench.throughput import (  # noqa: E402
    delete_queue,
    engine_parser,
    free_port,
    wait_port,
)
from mailconsole.config import Settings  # noqa: E402
from mailconsole.engine.ops import Ops  # noqa: E402
from mailconsole.engine.runtime import Engine  # noqa: E402
from mailconsole.engine.store.cause_index import cause_rows_of  # noqa: E402
from mailconsole.engine.store.db import Database  # noqa: E402
from mailconsole.engine.store.models import CauseRow, MessageRow, RecipientRow  # noqa: E402

# An aiosmtpd sink that records the Message-ID of each accepted message, one a line.
SINK = """\
import re, sys, time
from aiosmtpd.controller import Controller
ids = open(sys.argv[2], "a", buffering=1)
pattern = re.compile(rb"^Message-ID:\\s*(\\S+)", re.I | re.M)
class Handler:
    async def handle_DATA(self, server, session, envelope):
        found = pattern.search(envelope.original_content or envelope.content)
        ids.write((found.group(1).decode() if found else "-") + "\\n")
        return "250 2.0.0 OK"
Controller(Handler(), hostname="127.0.0.1", port=int(sys.argv[1])).start()
while True:
    time.sleep(3600)
"""


async def seed_dead(db: Database, n: int, chunk: int = 5000) -> None:
    """``n`` dead messages, as the engine leaves them after a 550 5.1.1."""
    start = datetime.now(UTC) - timedelta(hours=1)
    for offset in range(0, n, chunk):
        rows: list[dict[str, Any]] = []
        rcpts: list[dict[str, Any]] = []
        for i in range(offset, min(n, offset + chunk)):
            message_id = f"m-bench{i:07d}"
            rcpt = f"user{i}@domain{i % 10}.example"
            text = f"5.1.1 <{rcpt}>: Recipient address rejected: User unknown"
            job = {
                "id": message_id,
                "from": "shop@example.com",
                "to": [rcpt],
                "subject": f"Order {i} shipped",
                "text": ("Your order has shipped. " * 40)[:1000],
            }
            at = start + timedelta(milliseconds=i)
            rows.append(
                {
                    "id": message_id,
                    "idempotency_key": message_id,
                    "status": "dead",
                    "source_format": "extended",
                    "payload": json.dumps(job),
                    "sender": "shop@example.com",
                    "recipients": rcpt,
                    "rcpt_state": {rcpt: "refused"},
                    "subject": job["subject"],
                    "priority": 0,
                    "attempts": 1,
                    "last_error": f"message refused: 550 {text}",
                    "last_code": 550,
                    "last_enhanced": "5.1.1",
                    "last_reply": text,
                    "possible_duplicate": False,
                    "duplicates": 0,
                    "created_at": at,
                    "updated_at": at,
                }
            )
            rcpts.append(
                {
                    "message_id": message_id,
                    "address": rcpt,
                    "domain": rcpt.rpartition("@")[2],
                }
            )
        causes = [cause for r in rows for cause in cause_rows_of(r)]
        async with db.write() as session, session.begin():
            await session.execute(insert(MessageRow), rows)
            await session.execute(insert(RecipientRow), rcpts)
            await session.execute(insert(CauseRow), causes)


async def count_sent(db: Database) -> int:
    async with db.read() as session:
        stmt = select(func.count()).select_from(MessageRow)
        return int(await session.scalar(stmt.where(MessageRow.status == "sent")) or 0)


async def run(args: argparse.Namespace) -> int:
    url = os.environ.get(
        "MAILCONSOLE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"
    )
    queue = f"bench-replay-{uuid.uuid4().hex[:8]}"
    tmp = Path(tempfile.mkdtemp(prefix="mc-bench-replay-"))
    db_url = args.database_url or f"sqlite+aiosqlite:///{tmp}/bench.db"
    port, received = free_port(), tmp / "received.txt"
    # Started once before anything runs; a bench may block for that moment.
    sink = subprocess.Popen(  # noqa: ASYNC220
        [sys.executable, "-c", SINK, str(port), str(received)]
    )
    n = args.messages
    try:
        wait_port(port)
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
        db = Database(db_url)
        await db.upgrade()
        t0 = time.perf_counter()
        await seed_dead(db, n)
        seeded = time.perf_counter() - t0
        engine = Engine(settings)
        if not args.engine_after:
            await engine.start()
        ops = await Ops.open(settings, actor="bench")
        try:
            t0 = time.perf_counter()
            plan = await ops.plan("replay", "status:dead")
            planned = time.perf_counter() - t0
            t0 = time.perf_counter()
            report = await ops.replay(query="status:dead", reason="bench")
            replayed = time.perf_counter() - t0
            if args.engine_after:
                await engine.start()
            while await count_sent(db) < n:
                await asyncio.sleep(0.05)
            delivered = time.perf_counter() - t0
            await engine.run_until_idle(timeout=60)
        finally:
            await ops.close()
            await engine.stop()
            await db.dispose()
        counts = collections.Counter(received.read_text().split())
        twice = sum(1 for c in counts.values() if c > 1)
        print(f"store:       {db_url.split(':')[0]}")
        print(f"messages:    {n} dead (seeded in {seeded:.2f} s)")
        print(f"plan:        {planned:.2f} s (count {plan.count}, "
              f"{len(plan.domains)} domains, {len(plan.causes)} causes)")  # fmt: skip
        print(
            f"replay:      {replayed:.2f} s ({len(report.done)} replayed, "
            f"{len(report.skipped)} skipped, {len(report.failed)} failed; "
            f"{n / replayed:.0f} msgs/s)"
        )
        print(
            f"delivered:   {delivered:.2f} s after the replay began "
            f"({n / delivered:.0f} msgs/s)"
        )
        print(
            f"at the sink: {sum(counts.values())} messages, {len(counts)} distinct "
            f"Message-IDs, {twice} received more than once"
        )
        print(
            "pool/concurrency/prefetch/batch: "
            f"{args.pool}/{args.concurrency}/{args.prefetch}/{args.batch}"
        )
        ok = len(counts) == n and twice == 0 and len(report.done) == n
        return 0 if ok else 1
    finally:
        sink.terminate()
        sink.wait()
        await delete_queue(url, queue)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = engine_parser(__doc__, 10_000)
    parser.add_argument(
        "--engine-after",
        action="store_true",
        help="start the engine only after the replay (its cost alone; the default "
        "replays while the engine sends, in the same process, as the console does)",
    )
    sys.exit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
