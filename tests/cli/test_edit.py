"""``mailconsole edit`` as an operator runs it: a real process on a terminal (a pty),
``$EDITOR`` set to a small script that changes the JSON, a live engine delivering
the corrected copy, and a rejected edit that changes nothing. Also the question a
bulk action asks on a terminal."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from mailconsole.config import Settings
from mailconsole.engine.runtime import Engine
from mailconsole.engine.store.db import Database
from mailconsole.engine.store.models import AuditRow, MessageRow
from tests.support.engine import wait_until
from tests.support.seed import seed
from tests.support.smtp_server import FaultySMTPServer

pytestmark = pytest.mark.rabbitmq

Start = Callable[[Settings], Awaitable[Engine]]
Make = Callable[..., Settings]

EDITOR = """\
import json, os, sys
path = sys.argv[1]
patch = os.environ["EDIT_PATCH"]
if patch == "BROKEN":
    open(path, "a").write("{")
elif patch != "SAME":
    job = json.load(open(path))
    job.update(json.loads(patch))
    json.dump(job, open(path, "w"))
"""


@dataclass
class Finished:
    code: int
    out: str
    err: str


async def run_on_a_terminal(
    settings: Settings,
    tmp_path: Path,
    patch: dict[str, Any] | str,
    *args: str,
    answer: str | None = None,
    all_on_the_terminal: bool = False,
) -> Finished:
    """``mailconsole ...`` in a child process whose stdin and stdout are a pty (and
    stderr too with ``all_on_the_terminal``); ``answer`` is typed at its prompt."""
    script = tmp_path / "editor.py"
    script.write_text(EDITOR)
    env = {
        **os.environ,
        "EDITOR": f"{sys.executable} {script}",
        "EDIT_PATCH": patch if isinstance(patch, str) else json.dumps(patch),
    }
    env.pop("VISUAL", None)
    master, slave = os.openpty()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mailconsole",
        "--database-url",
        settings.database_url.get_secret_value(),
        "--amqp-url",
        settings.amqp_url.get_secret_value(),
        "--queue",
        settings.queue,
        *args,
        stdin=slave,
        stdout=slave,
        stderr=slave if all_on_the_terminal else asyncio.subprocess.PIPE,
        env=env,
    )
    os.close(slave)
    if answer is not None:
        os.write(master, answer.encode())  # the terminal buffers it for the prompt
    out = asyncio.get_running_loop().run_in_executor(None, _read_all, master)
    err = ""
    if process.stderr is not None:
        err = (await asyncio.wait_for(process.stderr.read(), 60)).decode()
    code = await asyncio.wait_for(process.wait(), 60)
    return Finished(code, (await out).replace("\r\n", "\n"), err)


def _read_all(fd: int) -> str:
    chunks = []
    try:
        while chunk := os.read(fd, 4096):
            chunks.append(chunk)
    except OSError:  # EIO: the child closed its side of the terminal
        pass
    finally:
        os.close(fd)
    return b"".join(chunks).decode(errors="replace")


async def store_state(url: str) -> tuple[list[tuple[Any, ...]], int]:
    db = Database(url)
    try:
        async with db.read() as session:
            rows = await session.execute(
                select(MessageRow.id, MessageRow.status, MessageRow.payload).order_by(
                    MessageRow.id
                )
            )
            audits = await session.scalar(select(func.count()).select_from(AuditRow))
            return [tuple(r) for r in rows], int(audits or 0)
    finally:
        await db.dispose()


async def seeded(settings: Settings) -> str:
    url = settings.database_url.get_secret_value()
    db = Database(url)
    await db.upgrade()
    await seed(db, "three_dead")
    await db.dispose()
    return url


async def test_a_valid_edit_is_a_new_linked_message_that_gets_delivered(
    smtp_server: FaultySMTPServer,
    engine_factory: Make,
    running: Start,
    tmp_path: Path,
) -> None:
    settings = engine_factory(smtp_server.port)
    await seeded(settings)
    engine = await running(settings)
    fix = {"to": ["carol@example.com"], "subject": "Order 2 (fixed)"}
    done = await run_on_a_terminal(
        settings, tmp_path, fix, "edit", "m-0002", "--reason", "typo"
    )
    assert done.code == 0, done.err
    new_id = done.out.strip().splitlines()[-1]
    assert done.err.strip() == f"{new_id} queued, a corrected copy of m-0002"
    ops = engine.ops("tester")

    async def delivered() -> bool:
        return (await ops.show(new_id)).summary.status == "sent"

    await wait_until(delivered, 15, f"{new_id} sent")
    [got] = smtp_server.received
    assert got.recipients == ("carol@example.com",)
    assert got.message_id == f"<{new_id}@mailconsole.local>"
    original = await ops.show("m-0002")
    assert original.summary.status == "dead" and original.edited_into == (new_id,)
    assert original.payload is not None
    assert original.payload["to"] == ["carol@example.org"]  # kept for the record
    copy = await ops.show(new_id)
    assert copy.summary.edited_from == "m-0002"
    assert copy.summary.subject == "Order 2 (fixed)"
    assert [a.reason for a in original.audit] == ["typo"]


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ({"to": ["not an address"]}, "mailconsole: invalid job: "),
        ({"from": ""}, "mailconsole: invalid job: "),
        ("BROKEN", "mailconsole: not valid JSON: "),
        ("SAME", "mailconsole: no changes made; nothing saved"),
    ],
)
async def test_an_invalid_edit_is_rejected_and_nothing_changes(
    amqp_url: str,
    queue_name: str,
    engine_factory: Make,
    tmp_path: Path,
    patch: dict[str, Any] | str,
    expected: str,
) -> None:
    settings = engine_factory(1)
    url = await seeded(settings)
    before = await store_state(url)
    done = await run_on_a_terminal(settings, tmp_path, patch, "edit", "m-0002")
    assert done.code == 1
    [line] = done.err.strip().splitlines()
    assert line.startswith(expected)
    if patch != "SAME":
        # The rejected edit is kept for the operator to fix, not lost.
        assert "your edit is kept in" in line and line.endswith("nothing saved")
    assert await store_state(url) == before


async def test_edit_off_a_terminal_needs_a_file(
    engine_factory: Make, tmp_path: Path
) -> None:
    settings = engine_factory(1)
    await seeded(settings)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mailconsole",
        "--database-url",
        settings.database_url.get_secret_value(),
        "edit",
        "m-0002",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await process.communicate()
    assert process.returncode == 2
    assert err.decode().strip() == (
        "mailconsole: edit needs a terminal for $EDITOR, or --json FILE"
    )


@pytest.mark.parametrize(("answer", "code"), [("n\n", 1), ("y\n", 0)])
async def test_a_bulk_action_on_a_terminal_asks_and_reports_progress(
    amqp_url: str,
    queue_name: str,
    engine_factory: Make,
    tmp_path: Path,
    answer: str,
    code: int,
) -> None:
    settings = engine_factory(1)
    url = await seeded(settings)
    before = await store_state(url)
    done = await run_on_a_terminal(
        settings, tmp_path, "SAME", "replay", "--all", answer=answer,
        all_on_the_terminal=True,
    )  # fmt: skip
    assert done.code == code, done.out
    assert "plan: replay 3 messages matching 'status:dead'" in done.out
    assert "replay 3 messages? [y/N]" in done.out
    if code:
        assert "not done" in done.out and await store_state(url) == before
    else:
        assert "replay: 3/3" in done.out  # progress, on the terminal only
        assert "replayed 3, skipped 0, failed 0" in done.out
        rows, audits = await store_state(url)
        assert {status for _, status, _ in rows} == {"queued"} and audits == 4
