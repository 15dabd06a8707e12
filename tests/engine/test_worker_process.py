"""The headless worker as a real process: SIGKILL mid-stream, SIGTERM, restart."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path

import pytest

from mailconsole.engine.store.db import Database
from tests.support.engine import dotnet_job, publish_raw, wait_for_statuses, wait_until
from tests.support.smtp_server import Fault, FaultySMTPServer
from tests.support.worker import rows, start_worker, worker_env

pytestmark = pytest.mark.rabbitmq


async def wait_received(server: FaultySMTPServer, n: int, timeout: float = 30) -> None:
    async def enough() -> bool:
        return len(server.received) >= n

    await wait_until(enough, timeout, f"{n} messages at the SMTP server")


async def test_sigkill_mid_stream_then_restart_loses_nothing(
    amqp_url: str,
    queue_name: str,
    make_smtp_server: type[FaultySMTPServer],
    tmp_path: Path,
) -> None:
    total = 150
    server = make_smtp_server(faults=[Fault("data", stall=0.01)])
    db_url = f"sqlite+aiosqlite:///{tmp_path}/store.db"
    env = worker_env(amqp_url, queue_name, db_url, server.port)
    await publish_raw(
        amqp_url,
        queue_name,
        [dotnet_job(n, f"u{n}@example.com") for n in range(total)],
        persistent=True,
    )
    first = start_worker(env, tmp_path / "w1.log")
    try:
        await wait_received(server, 30)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    killed_at = len(server.received)
    second = start_worker(env, tmp_path / "w2.log")
    db = Database(db_url)
    try:
        await wait_for_statuses(db, {"sent": total}, timeout=60)
        stored = await rows(db)
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0, (tmp_path / "w2.log").read_text()
        await db.dispose()
    per_recipient = Counter(r for m in server.received for r in m.recipients)
    assert set(per_recipient) == {f"u{n}@example.com" for n in range(total)}, (
        "a message was lost"
    )
    doubled = {r for r, n in per_recipient.items() if n > 1}
    flagged = {m.recipients for m in stored if m.possible_duplicate}
    # Only messages in flight at the kill may arrive twice, and each is flagged.
    assert doubled <= flagged, (doubled, flagged)
    # concurrency is 8: at most 8 sends can be past the 250 and before the commit;
    # flagged are the rows it had claimed: 8 in flight + 16 queued for the senders
    # + 1 being taken in when the queue was full.
    assert len(doubled) <= 8, f"more duplicates than sends in flight: {len(doubled)}"
    assert len(flagged) <= 25, (
        f"flagged more than the worker had claimed: {len(flagged)}"
    )
    print(
        f"killed after {killed_at} deliveries; duplicates {len(doubled)}, flagged {len(flagged)}"
    )


async def test_sigterm_finishes_in_flight_sends_and_the_rest_goes_out_once(
    amqp_url: str,
    queue_name: str,
    make_smtp_server: type[FaultySMTPServer],
    tmp_path: Path,
) -> None:
    total = 100
    server = make_smtp_server(faults=[Fault("data", stall=0.01)])
    db_url = f"sqlite+aiosqlite:///{tmp_path}/store.db"
    env = worker_env(amqp_url, queue_name, db_url, server.port)
    await publish_raw(
        amqp_url,
        queue_name,
        [dotnet_job(n, f"u{n}@example.com") for n in range(total)],
        persistent=True,
    )
    first = start_worker(env, tmp_path / "w1.log")
    await wait_received(server, 20)
    first.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(first.wait, 30)
    assert code == 0, (tmp_path / "w1.log").read_text()
    second = start_worker(env, tmp_path / "w2.log")
    db = Database(db_url)
    try:
        await wait_for_statuses(db, {"sent": total}, timeout=60)
        stored = await rows(db)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)
        await db.dispose()
    per_recipient = Counter(r for m in server.received for r in m.recipients)
    assert sorted(per_recipient.values()) == [1] * total
    assert not any(m.possible_duplicate for m in stored)


async def test_json_logs_never_carry_the_password(
    amqp_url: str,
    queue_name: str,
    make_smtp_server: type[FaultySMTPServer],
    tmp_path: Path,
) -> None:
    import base64
    import json

    password = "Wr0ng-Passw0rd-xyz"
    server = make_smtp_server(auth=("mailer", "the-right-one"))
    db_url = f"sqlite+aiosqlite:///{tmp_path}/store.db"
    env = worker_env(amqp_url, queue_name, db_url, server.port)
    env.update(
        {
            "MAILCONSOLE_SMTP_USERNAME": "mailer",
            "MAILCONSOLE_SMTP_PASSWORD": password,
            "MAILCONSOLE_LOG_FORMAT": "json",
            "MAILCONSOLE_LOG_LEVEL": "DEBUG",
        }
    )
    await publish_raw(amqp_url, queue_name, [dotnet_job(1)])
    log = tmp_path / "w.log"
    worker = start_worker(env, log)
    db = Database(db_url)
    try:
        await wait_for_statuses(db, {"scheduled": 1}, timeout=30)
        [row] = await rows(db)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
        await db.dispose()
    assert "MAILCONSOLE_SMTP_USERNAME" in (row.last_error or ""), row.last_error
    text = log.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert lines and all(
        {"ts", "level", "logger", "msg"} <= set(line) for line in lines
    )
    encoded = base64.b64encode(password.encode()).decode()
    plain = base64.b64encode(f"\0mailer\0{password}".encode()).decode()
    for secret in (password, encoded, plain):
        assert secret not in text
        assert secret not in (row.last_error or "") + (row.last_reply or "")
