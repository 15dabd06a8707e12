"""Hostile data never reaches the operator's real terminal as escape sequences.

The console runs as a real process in a pseudo-terminal over a store seeded with
subjects, display names, bodies, raw bodies and SMTP replies full of ESC/CSI/OSC
sequences (clear screen, an OSC 52 clipboard write, a title change), 8-bit CSI, C1
controls, bidi overrides and Textual markup. The test drives every screen with
keystrokes (and clicks the ``[@click=app.quit]`` text), records every byte the
console writes, and checks that none of the data's own sequences is among them,
that the data is shown spelled out instead, that nothing acted on it and that the
console quits cleanly when told to.

Textual writes plenty of escape sequences of its own, so the checks look only for
the data's distinctive ones (``ZXZpbA==`` is "evil", ``PWNED`` a window title,
``wipe`` marks the clear screen). A small screen model (cursor moves and text, the
rest ignored) tells the test what the terminal shows, so it can wait for a screen
instead of sleeping, and find where to click.
"""

from __future__ import annotations

import asyncio
import codecs
import fcntl
import json
import os
import re
import select
import sqlite3
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from rich.cells import cell_len

from mailconsole.engine.store.db import Database
from mailconsole.engine.store.delivery import DeliveryStore, NewMessage
from mailconsole.engine.store.dto import Status
from tests.support.seed import NOW, SEED_WORKER, new_message, result

pytestmark = [pytest.mark.rabbitmq, pytest.mark.timeout(180)]

COLUMNS, LINES = 80, 24
WAIT = 30.0
"""Seconds any one screen may take to appear (a loaded 2-core CI machine)."""

OSC52 = "\x1b]52;c;ZXZpbA==\x07"
TITLE = "\x1b]0;PWNED\x07"
WIPE = "wipe\x1b[2J"
CSI8 = "\x9b2J"
DCS = "\x90evil\x1b\\"
NEL = "\x85"
RLO = "\u202e"
CLOSE = "[/bold]"
LINK = "[link=https://evil.example]x[/link]"
CLICK = "[@click=app.quit]q[/]"

EVE = "eve@example.com"
ZOE = "zoe@example.net"
DEAD_SUBJECT = f"{CLOSE}{OSC52}{CLICK}"
DEAD_REPLY = f"5.1.1 <{EVE}>: {WIPE} {CSI8} {DCS} {NEL}{RLO} {LINK}"
VALID_SUBJECT = f"Ord{RLO}er {CLOSE} {CLICK}"
VALID_TEXT = f"Hello {OSC52} {TITLE}\n{WIPE} {CSI8} {NEL} {LINK}\n"
VALID_HTML = f"<p>{CLICK} {TITLE} {OSC52}</p>"
RAW_BODY = f'{{"Subject": "{TITLE}{OSC52} {CSI8} {CLICK}"'.encode() + b"\xff"
SCHEDULED_REPLY = f"4.7.1 {TITLE} greylisted {RLO}{CLOSE} {OSC52}"

FORBIDDEN: tuple[bytes, ...] = (
    OSC52.encode()[:-1],  # the clipboard write, with or without its terminator
    b"ZXZpbA==\x07",
    TITLE.encode()[:-1],
    b"PWNED\x07",
    WIPE.encode(),
    b"\x9b2J",  # 8-bit CSI written as a raw byte
    "\x9b".encode(),  # ... or as the UTF-8 of U+009B
    "\x90".encode(),  # DCS
    b"evil\x1b\\",
    NEL.encode(),
    RLO.encode(),
)
"""The data's own sequences: none may appear anywhere in what the console wrote."""
OVERLAP = max(map(len, FORBIDDEN))

SPELLED = (
    "\\x1b]52;c;ZXZpbA==\\x07",
    "\\x1b]0;PWNED\\x07",
    "wipe\\x1b[2J",
    "\\x9b2J",
    "\\x90evil\\x1b\\",
    "\\x85\\u202e",
    "[/bold]",
    LINK,
    CLICK,
)
"""How the data is shown instead; each must have been on the screen at some point."""


# -- the store ----------------------------------------------------------------------
def _payload(n: int, sender: str, to: list[str], **fields: str) -> str:
    data = {"id": f"m-{n:04d}", "from": sender, "to": to, **fields}
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


async def _fill(db: Database) -> None:
    store = DeliveryStore(db, SEED_WORKER)

    async def dead(message: NewMessage, minutes: int, reply: str) -> None:
        at = NOW - timedelta(minutes=minutes)
        await store.ingest([message], at)
        state = dict.fromkeys(message.recipients, "refused")
        cause = (550, "5.1.1", reply)
        await store.record_results(
            [result(message.id, Status.DEAD, state, cause, at=at)], at
        )

    sent = new_message(1, ZOE, subject=f"sent {OSC52} {CLICK}")
    await store.ingest([sent], NOW - timedelta(minutes=9))
    await store.record_results(
        [result(sent.id, Status.SENT, {ZOE: "sent"}, None, at=NOW)], NOW
    )
    scheduled = new_message(2, ZOE)
    await store.ingest([scheduled], NOW - timedelta(minutes=8))
    await store.record_results(
        [
            result(
                scheduled.id,
                Status.SCHEDULED,
                {ZOE: "pending"},
                (451, "4.7.1", SCHEDULED_REPLY),
                at=NOW - timedelta(minutes=8),
                next_attempt_at=NOW + timedelta(minutes=5),
            )
        ],
        NOW - timedelta(minutes=8),
    )
    rejected = NewMessage(
        id="m-0003",
        status=Status.DEAD,
        source_format="invalid",
        payload=None,
        raw_body=RAW_BODY,
        last_error=f"rejected on arrival: not JSON {TITLE}",
    )
    await store.ingest([rejected], NOW - timedelta(minutes=7))
    # A job the wire accepts: bidi and markup in names and subject, escapes in the
    # bodies; its Headers, Text and HTML tabs render.
    names = f"Mallory {RLO}{CLOSE} <shop@example.com>"
    valid = new_message(
        4,
        EVE,
        subject=VALID_SUBJECT,
        payload=_payload(
            4,
            names,
            [f"Eve {LINK} <{EVE}>"],
            subject=VALID_SUBJECT,
            text=VALID_TEXT,
            html=VALID_HTML,
        ),
    )
    await dead(valid, 6, DEAD_REPLY)
    # Stored by an older parser (or another writer): escapes in every header.
    worst = new_message(
        5,
        EVE,
        subject=DEAD_SUBJECT,
        payload=_payload(
            5,
            f"Mallory{TITLE}{NEL} <shop@example.com>",
            [f"Eve{OSC52}{RLO}{LINK} <{EVE}>"],
            subject=DEAD_SUBJECT,
            text=VALID_TEXT,
        ),
    )
    await dead(worst, 5, DEAD_REPLY)


async def _seed(url: str) -> None:
    db = Database(url)
    try:
        await db.upgrade()
        await _fill(db)
    finally:
        await db.dispose()


def _log(store: Path) -> str:
    """What the console logged (to a file under its TMPDIR) while it ran."""
    logs = sorted((store.parent / "tmp").glob("mailconsole-*/console.log"))
    return "".join(log.read_text(errors="replace") for log in logs)


def _statuses(path: Path) -> tuple[dict[str, str], int]:
    with sqlite3.connect(path) as conn:
        rows = dict(conn.execute("SELECT id, status FROM messages").fetchall())
        (audits,) = conn.execute("SELECT count(*) FROM audit").fetchone()
    return rows, audits


# -- the terminal -------------------------------------------------------------------
_TOKEN = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"  # OSC
    r"|\x1b[P^_X][^\x1b]*\x1b\\"  # DCS, PM, APC, SOS
    r"|\x1b[ -/]*[0-OQ-WYZ\\`-~]"  # any other ESC sequence
    r"|[\x00-\x1a\x1c-\x1f\x7f]"  # a C0 control
    r"|[^\x00-\x1f\x1b\x7f]+",  # text
    re.S,
)


def _plain(data: bytes) -> str:
    """``data`` without escape sequences: a traceback printed on the way out."""
    text = data.decode("utf-8", errors="replace")
    return re.sub(
        r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|.)", "", text
    )


class Screen:
    """Enough of a terminal to know what it shows: cursor moves, erases and text."""

    def __init__(self, columns: int, lines: int) -> None:
        self.columns, self.lines = columns, lines
        self.cells = [[" "] * columns for _ in range(lines)]
        self.x = self.y = 0
        self._pending = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def feed(self, data: bytes) -> None:
        text = self._pending + self._decoder.decode(data)
        pos = 0
        while pos < len(text):
            match = _TOKEN.match(text, pos)
            if match is None and len(text) - pos < 4096:
                break  # an escape sequence cut in two: wait for the rest
            if match is None:  # not one this model knows: skip its ESC
                pos += 1
                continue
            self._apply(match.group())
            pos = match.end()
        self._pending = text[pos:]

    def _apply(self, token: str) -> None:
        if token.startswith("\x1b["):
            self._csi(token[2:-1], token[-1])
        elif token == "\r":
            self.x = 0
        elif token == "\n":
            self.y = min(self.y + 1, self.lines - 1)
        elif token == "\b":
            self.x = max(self.x - 1, 0)
        elif not token.startswith("\x1b") and token >= " ":
            self._text(token)

    def _csi(self, params: str, final: str) -> None:
        if params.startswith(("?", "<", ">", "=")):
            return
        numbers = [int(p) if p.isdigit() else 0 for p in params.split(";")]
        first = numbers[0] or 1
        if final in "Hf":
            line, col = [*numbers, 0, 0][:2]
            self.y = min(max(line, 1), self.lines) - 1
            self.x = min(max(col, 1), self.columns) - 1
        elif final in "ABCD":
            dy = {"A": -first, "B": first}.get(final, 0)
            dx = {"C": first, "D": -first}.get(final, 0)
            self.y = min(max(self.y + dy, 0), self.lines - 1)
            self.x = min(max(self.x + dx, 0), self.columns - 1)
        elif final == "J" and numbers[0] == 2:
            self.cells = [[" "] * self.columns for _ in range(self.lines)]
        elif final == "K":
            start = 0 if numbers[0] in (1, 2) else self.x
            end = self.x + 1 if numbers[0] == 1 else self.columns
            self.cells[self.y][start:end] = [" "] * (end - start)

    def _text(self, text: str) -> None:
        row = self.cells[self.y]
        for char in text:
            width = cell_len(char)
            if width == 0 or self.x + width > self.columns:
                continue
            row[self.x] = char
            if width == 2:
                row[self.x + 1] = ""
            self.x += width

    def text(self) -> str:
        return "\n".join("".join(row) for row in self.cells)

    def find(self, needle: str) -> tuple[int, int] | None:
        """(column, row) of ``needle`` on the screen, 0-based, or None."""
        for y, row in enumerate(self.cells):
            x = "".join(row).find(needle)
            if x >= 0:
                return x, y
        return None


class Console:
    """The console in a pseudo-terminal: every byte it writes, and what it shows."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        master, slave = os.openpty()
        winsize = struct.pack("HHHH", LINES, COLUMNS, 0, 0)
        fcntl.ioctl(slave, termios.TIOCSWINSZ, winsize)
        self.fd = master
        self.raw = bytearray()
        self.screen = Screen(COLUMNS, LINES)
        self.leaked: list[bytes] = []
        """Which of the data's sequences were written (checked as bytes arrive)."""
        self.seen: list[str] = []
        """The screen as it was at every wait: what the operator saw along the way."""
        self._changed = threading.Condition()
        try:
            self.process = subprocess.Popen(
                argv,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        finally:
            os.close(slave)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                ready, _, _ = select.select([self.fd], [], [], 0.5)
                if not ready:
                    if self.process.poll() is not None:
                        break
                    continue
                data = os.read(self.fd, 65536)
            except OSError:  # EIO: the child closed its side of the terminal
                break
            if not data:
                break
            with self._changed:
                fresh = bytes(self.raw[-OVERLAP:]) + data
                self.raw += data
                self.leaked += [s for s in FORBIDDEN if s in fresh]
                self.screen.feed(data)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def send(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    def click(self, x: int, y: int) -> None:
        """A left click at 0-based (x, y), in the SGR mouse encoding Textual asks for."""
        self.send(f"\x1b[<0;{x + 1};{y + 1}M\x1b[<0;{x + 1};{y + 1}m")

    def wait_for(self, *needles: str, what: str = "") -> str:
        """Wait until the screen shows every one of ``needles``; returns the screen."""
        return self.wait_until(lambda s: all(n in s for n in needles), what or needles)

    def wait_until(self, shows: Callable[[str], bool], what: object) -> str:
        deadline = time.monotonic() + WAIT
        with self._changed:
            while True:
                text = self.screen.text()
                if self.leaked:
                    raise AssertionError(
                        f"the data's own bytes reached the terminal: {self.leaked}"
                        f" (waiting for {what!r}); the screen:\n{text}"
                    )
                if shows(text):
                    self.seen.append(text)
                    return text
                if self.process.poll() is not None and not self._reader.is_alive():
                    raise AssertionError(
                        f"the console exited ({self.process.returncode}) while "
                        f"waiting for {what!r}; last screen:\n{text}\n"
                        f"it wrote last:\n{_plain(bytes(self.raw))[-3000:]}"
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"no {what!r} on screen within {WAIT:g}s; it shows:\n{text}"
                    )
                self._changed.wait(min(left, 0.5))

    def alive(self) -> bool:
        return self.process.poll() is None

    def finish(self, timeout: float = WAIT) -> int:
        code = self.process.wait(timeout)
        self._reader.join(timeout)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._reader.join(10)
        os.close(self.fd)


def _env(tmp_path: Path) -> dict[str, str]:
    """The parent's environment without anything that would change the console."""
    keep = ("PATH", "USER", "LOGNAME", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if k in keep}
    for name in ("config", "data", "cache", "state", "home", "tmp"):
        (tmp_path / name).mkdir()
    env.update(
        {
            "TERM": "xterm-256color",
            "COLUMNS": str(COLUMNS),
            "LINES": str(LINES),
            "HOME": str(tmp_path / "home"),
            "XDG_CONFIG_HOME": str(tmp_path / "config"),
            "XDG_DATA_HOME": str(tmp_path / "data"),
            "XDG_CACHE_HOME": str(tmp_path / "cache"),
            "XDG_STATE_HOME": str(tmp_path / "state"),
            "TMPDIR": str(tmp_path / "tmp"),  # the console's log file goes here
            "LANG": "C.UTF-8",
            "PYTHONIOENCODING": "utf-8",
        }
    )
    return env


@pytest.fixture
def console(
    tmp_path: Path, amqp_url: str, queue_name: str
) -> Iterator[tuple[Console, Path]]:
    store = tmp_path / "store.db"
    url = f"sqlite+aiosqlite:///{store}"
    asyncio.run(_seed(url))
    argv = [sys.executable, "-m", "mailconsole", "--no-engine"]
    argv += ["--database-url", url, "--amqp-url", amqp_url, "--queue", queue_name]
    term = Console(argv, _env(tmp_path), cwd=tmp_path)
    try:
        yield term, store
    finally:
        term.kill()


# -- driving ------------------------------------------------------------------------
ESC, ENTER, DOWN = "\x1b", "\r", "\x1b[B"
NEXT_TAB = "]"
CTRL_O, CTRL_Q = "\x0f", "\x11"
TABS = ("Timeline", "Headers", "Text", "HTML", "Raw")


def active_tab(screen: str) -> str | None:
    """The detail tab whose label the underline bar (``━╸━━━╺━``) sits under, once it
    has finished sliding there."""
    lines = screen.splitlines()
    for y, line in enumerate(lines[:-1]):
        if " Timeline  Headers" not in line:
            continue
        bar = lines[y + 1]
        start, end = bar.find("╸") + 1, bar.find("╺")
        for tab in TABS:
            at = line.find(f" {tab} ") + 1
            if at == start and end == at + len(tab):
                return tab
    return None


def _on_tab(term: Console, message_id: str, tab: str, needle: str) -> None:
    term.wait_until(
        lambda s: message_id in s and active_tab(s) == tab and needle in s,
        f"{message_id} on its {tab} tab showing {needle!r}",
    )


def _detail(term: Console, message_id: str, status: str, tabs: list[str]) -> None:
    """Open the message under the cursor and go through its tabs (``tabs``: what
    each tab after the timeline shows)."""
    term.send(ENTER)
    term.wait_for(message_id, f" {status} ", "accepted")
    _on_tab(term, message_id, "Timeline", "accepted")
    for tab, needle in zip(TABS[1:], tabs, strict=True):
        term.send(NEXT_TAB)
        _on_tab(term, message_id, tab, needle)


def _back(term: Console, list_title: str) -> None:
    """Escape from a detail screen to the list it came from."""
    term.send(ESC)
    term.wait_until(lambda s: list_title in s and "attempts " not in s, list_title)


def _help(term: Console, screen: str, close: str) -> None:
    term.send("?")
    term.wait_for(f"Keys · {screen}")
    term.send(close)
    term.wait_until(lambda s: "Keys ·" not in s, "the help closed")


def _drive(term: Console) -> None:
    """Every screen, and the detail of every message the lists show."""
    live = "Latest deliveries and failures"
    term.wait_for(live, "dead 3", what="the live screen")
    _help(term, "live", ESC)

    term.send("s")
    term.wait_for("Scheduled and held", "1 matching")
    order = "Your order 2 is on its way."
    _detail(term, "m-0002", "SCHEDULED", ["From: Shop", order, "(no html", '"id"'])
    _back(term, "Scheduled and held")

    term.send("d")
    term.wait_for("Dead letters", "3 matching", "rejected on arrival")
    # its stored job no longer validates: each rendered tab says so, Raw shows it
    why = "cannot render: the stored job"
    _detail(term, "m-0005", "DEAD", [why, why, why, '"id"'])
    # The subject is plain text: a click on the "q" of its [@click=app.quit]q[/]
    # does nothing, and the click after it (on a tab, which shows that clicks do
    # arrive) still finds a console to act on.
    spot = term.screen.find(CLICK)
    assert spot is not None, term.screen.text()
    term.click(spot[0] + CLICK.index("]q[") + 1, spot[1])
    tab = term.screen.find(" Timeline  Headers")
    assert tab is not None
    term.click(tab[0] + 2, tab[1])
    _on_tab(term, "m-0005", "Timeline", "accepted")
    _back(term, "Dead letters")
    term.send(DOWN)
    _detail(term, "m-0004", "DEAD", ['From: "Mallory', "Hello", "<p>", '"id"'])
    _back(term, "Dead letters")
    term.send(DOWN)
    no_job = "(no valid job stored"
    _detail(term, "m-0003", "DEAD", [no_job, no_job, no_job, '{"Subject"'])
    _back(term, "Dead letters")

    term.send("g")
    term.wait_for("Count", "Cause", "rejected on arrival")
    term.send("g")
    term.wait_for("Recipient", "Reason", "rejected on arrival")
    _help(term, "dead", "q")

    term.send("c")
    term.wait_for("Fill in from, to")
    term.send(CTRL_O)
    term.wait_for("Preview · ")
    term.send(ESC)
    term.wait_until(lambda s: "Preview · " not in s, "the preview closed")
    term.send(ESC)  # leave the field: keys are commands again
    term.wait_for("lsdc screens")
    term.send("l")
    term.wait_for(live)


def test_hostile_data_never_reaches_the_terminal(
    console: tuple[Console, Path],
) -> None:
    term, store = console
    before = _statuses(store)

    _drive(term)
    assert term.alive(), "something quit the console before the operator did"
    term.send(CTRL_Q)
    code = term.finish()

    written = bytes(term.raw)
    leaked = [seq for seq in FORBIDDEN if seq in written]
    assert not leaked, f"the data's own bytes reached the terminal: {leaked}"
    assert not re.search(rb"\x1b\]8;[^\x07\x1b]*evil", written), "a live link"
    assert b"\x1b]52;" not in written, "a clipboard write (nothing was copied)"
    # Textual itself writes UTF-8 without C1 controls or bidi overrides.
    text = written.decode("utf-8")
    assert not re.search(
        "[\x80-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]", text
    )
    shown = "\n".join(term.seen)
    missing = [spelled for spelled in SPELLED if spelled not in shown]
    assert not missing, f"never shown spelled out: {missing}"
    log = _log(store)
    for problem in ("MarkupError", "Traceback", "Console error", " ERROR "):
        assert problem.encode() not in written, problem
        assert problem not in log, log
    assert code == 0, written[-2000:]
    assert _statuses(store) == before, "an action ran"
