"""Credentials and TLS end to end: a relay that wants STARTTLS and AUTH, relays that
cannot be trusted, and the password kept out of every place an operator looks.

The SMTP client's unit tests (tests/engine/test_smtp.py) cover each TLS mode, host
name checks and a wrong password against the pool directly; test_worker_process.py
checks JSON logs after a failed AUTH. Here the whole worker runs: through RabbitMQ,
the store and a real STARTTLS relay with a trustme certificate.
"""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from mailconsole.config import Settings
from mailconsole.engine.runtime import Engine
from mailconsole.engine.store.db import Database
from tests.support.engine import dotnet_job, publish_raw, wait_for_statuses
from tests.support.smtp_server import Fault, FaultySMTPServer
from tests.support.worker import rows, start_worker, worker_env

pytestmark = pytest.mark.rabbitmq

Start = Callable[[Settings], Awaitable[Engine]]
Make = Callable[..., Settings]
MakeServer = Callable[..., FaultySMTPServer]
USER, PASSWORD = "mailer", "S3cret-Relay-Pw-7781"


def secret_forms(user: str = USER, password: str = PASSWORD) -> list[str]:
    """The password as it could leak: plain, and base64 as AUTH PLAIN/LOGIN send it."""
    b64 = base64.b64encode
    return [
        password,
        b64(password.encode()).decode(),
        b64(f"\0{user}\0{password}".encode()).decode(),
        b64(f"{user}\0{user}\0{password}".encode()).decode(),
    ]


def assert_no_secret(text: str, where: str) -> None:
    for secret in secret_forms():
        assert secret not in text, f"the password ({secret!r}) appears in {where}"


def store_dump(path: Path) -> str:
    """Every value of every row of every table, as text."""
    db = sqlite3.connect(path)
    try:
        parts = []
        tables = [
            t
            for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")
        ]
        for table in tables:
            for row in db.execute(f'SELECT * FROM "{table}"'):
                for value in row:
                    if isinstance(value, bytes):
                        value = value.decode("latin-1")
                    parts.append(f"{table}: {value}")
        return "\n".join(parts)
    finally:
        db.close()


async def test_starttls_and_auth_mail_goes_only_over_verified_tls(
    amqp_url: str,
    queue_name: str,
    make_smtp_server: MakeServer,
    engine_factory: Make,
    running: Start,
) -> None:
    server = make_smtp_server(tls="starttls", auth=(USER, PASSWORD))
    smtp = {
        "tls": "starttls",
        "ca_file": str(server.ca_file),
        "username": USER,
        "password": PASSWORD,
    }
    engine = await running(engine_factory(server.port, smtp=smtp))
    await publish_raw(amqp_url, queue_name, [dotnet_job(n) for n in range(5)])
    await wait_for_statuses(engine.db, {"sent": 5})
    assert len(server.received) == 5
    assert all(m.tls and m.login == USER for m in server.received)
    events = server.events
    assert (
        events.index("starttls") < events.index("auth:PLAIN:ok") < events.index("mail")
    )
    assert not any(e.startswith("auth") and e.endswith("fail") for e in events)


@pytest.mark.parametrize("server_tls", ["none", "untrusted"])
async def test_a_relay_that_cannot_be_trusted_is_a_configuration_error(
    server_tls: str,
    amqp_url: str,
    queue_name: str,
    make_smtp_server: MakeServer,
    engine_factory: Make,
    running: Start,
) -> None:
    """No STARTTLS offered (a stripped offer looks the same), or a certificate from
    a CA we do not trust: nothing is sent in plaintext, the reason names the cause."""
    server = make_smtp_server(
        tls="none" if server_tls == "none" else "starttls", auth=(USER, PASSWORD)
    )
    smtp = {"tls": "starttls", "username": USER, "password": PASSWORD}
    engine = await running(engine_factory(server.port, smtp=smtp))
    await publish_raw(amqp_url, queue_name, [dotnet_job(1)])
    await wait_for_statuses(engine.db, {"scheduled": 1})
    [row] = await rows(engine.db)
    error = row.last_error or ""
    if server_tls == "none":
        assert "does not offer STARTTLS" in error and "MAILCONSOLE_SMTP_TLS" in error
        assert "no message was sent" in error
    else:
        assert "certificate" in error.lower(), error
    assert server.received == []
    assert not any(e.startswith(("auth", "mail")) for e in server.events), server.events
    assert_no_secret(error + (row.last_reply or ""), "the stored error")


async def test_the_password_is_in_no_log_config_output_or_store_row(
    amqp_url: str,
    queue_name: str,
    make_smtp_server: MakeServer,
    tmp_path: Path,
) -> None:
    server = make_smtp_server(
        tls="starttls",
        auth=(USER, PASSWORD),
        faults=[
            # A relay that echoes what it got: the reply lands in the store and logs.
            Fault(
                "rcpt",
                reply=f"550 5.7.1 no {PASSWORD} {secret_forms()[2]} here",
                recipient="^echo",
            ),
            Fault("data", reply=f"451 4.3.0 try later {secret_forms()[1]}", times=1),
        ],
    )
    path = tmp_path / "store.db"
    env = worker_env(amqp_url, queue_name, f"sqlite+aiosqlite:///{path}", server.port)
    config = tmp_path / "config.toml"
    config.write_text(f'[smtp]\nusername = "{USER}"\npassword = "{PASSWORD}"\n')
    env |= {
        "MAILCONSOLE_CONFIG": str(config),
        "MAILCONSOLE_SMTP_TLS": "starttls",
        "MAILCONSOLE_SMTP_CA_FILE": str(server.ca_file),
        "MAILCONSOLE_LOG_LEVEL": "DEBUG",
    }
    await publish_raw(
        amqp_url,
        queue_name,
        [dotnet_job(1), dotnet_job(2, "echo@example.com"), dotnet_job(3)],
    )
    log = tmp_path / "worker.log"
    worker = start_worker(env, log)
    db = Database(f"sqlite+aiosqlite:///{path}")
    try:
        await wait_for_statuses(db, {"sent": 2, "dead": 1}, timeout=30)
    finally:
        worker.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(worker.wait, 30) == 0, log.read_text()[-2000:]
        await db.dispose()
    assert all(m.tls for m in server.received)
    text = log.read_text()
    assert "DEBUG" in text or "connected to relay" in text, "the log was not captured"
    assert_no_secret(text, "the worker's log")
    assert_no_secret(store_dump(path), "the store")
    for args in (["config"], ["config", "--json"]):
        shown = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "mailconsole", *args],
            env=env | {"MAILCONSOLE_SMTP_PASSWORD": PASSWORD},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert shown.returncode == 0, shown.stderr
        assert_no_secret(shown.stdout + shown.stderr, f"`mailconsole {' '.join(args)}`")
        if args[-1] == "--json":
            assert json.loads(shown.stdout)["smtp"]["password"] == "********"
