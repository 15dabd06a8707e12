"""The ledger of a chaos scenario: what was published and what became of it.

Every job a scenario publishes carries its own key twice: as the idempotency key
(``id``) the engine deduplicates by, and as an ``X-Test-Job`` header the SMTP server
records. The ledger joins the three witnesses, the list of keys published, the
messages the SMTP server accepted and the store's rows, into six numbers:

``published``  jobs put on the queue (distinct keys; a job published twice counts once)
``delivered``  jobs the relay accepted for every recipient the store marked sent
``duplicated`` extra copies the relay accepted (per key and recipient, beyond the first)
``dead``       jobs the store ended as dead that the relay never accepted
``pending``    jobs still waiting (queued, scheduled, sending, held) or not yet stored
``lost``       jobs in none of those states: acknowledged and gone, or marked ``sent``
               while the relay never got them

``lost`` must always be 0. ``duplicated`` must be 0 except for jobs whose outcome was
truly unknown (the connection dropped after the final dot): those rows carry
``possible_duplicate`` and every copy has the same Message-ID; ``unexplained``
counts duplicates that break that rule and must always be 0.

Set ``MAILCONSOLE_LEDGER_OUT`` to a file to append each ledger as a JSON line (the
figures in docs/guarantees.md come from there).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import select

from mailconsole.engine.store.db import Database
from mailconsole.engine.store.models import MessageRow
from tests.support.engine import wait_until
from tests.support.smtp_server import FaultySMTPServer

WAITING = frozenset({"accepted", "queued", "scheduled", "sending", "held"})
FINAL = frozenset({"sent", "dead"})


def job(
    key: str,
    to: str | Sequence[str] = "user@example.com",
    **extra: Any,
) -> dict[str, Any]:
    """An extended job tagged with ``key`` (idempotency key and X-Test-Job header)."""
    recipients = [to] if isinstance(to, str) else list(to)
    body: dict[str, Any] = {
        "id": key,
        "from": "shop@example.com",
        "to": recipients,
        "subject": f"Order {key}",
        "text": f"Your order {key} has shipped.\n",
        "headers": {"X-Test-Job": key},
    }
    headers = extra.pop("headers", {})
    body.update(extra)
    body["headers"] = {**body["headers"], **headers}
    return body


def encode(jobs: Iterable[dict[str, Any]]) -> list[bytes]:
    return [json.dumps(j, ensure_ascii=False).encode() for j in jobs]


@dataclass
class Ledger:
    scenario: str
    published: int = 0
    delivered: int = 0
    duplicated: int = 0
    dead: int = 0
    pending: int = 0
    lost: int = 0
    unexplained: int = 0
    """Duplicates without the possible-duplicate flag or with differing Message-IDs."""
    flagged: int = 0
    """Rows the engine flagged as possibly delivered twice (outcome unknown)."""
    seconds: float = 0.0
    notes: dict[str, Any] = field(default_factory=dict)
    lost_keys: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"LEDGER {self.scenario}: published {self.published} / delivered "
            f"{self.delivered} / duplicated {self.duplicated} / dead {self.dead} / "
            f"pending {self.pending} / lost {self.lost}"
            f" (unknown-outcome flagged {self.flagged}, unexplained duplicates "
            f"{self.unexplained}, {self.seconds:.1f}s)"
        )

    def show(self) -> Ledger:
        """Print the ledger (``pytest -s`` or the captured output of a failure)."""
        print(self.line())
        if self.notes:
            print(f"LEDGER {self.scenario} notes: {self.notes}")
        out = os.environ.get("MAILCONSOLE_LEDGER_OUT")
        if out:
            entry = asdict(self)
            entry.pop("lost_keys")
            with open(out, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(entry) + "\n")
        return self

    def check(self, *, allow_unknown_duplicates: bool = False) -> Ledger:
        """Assert the promise: nothing lost, nothing pending, and no duplicate unless
        its outcome was unknown (when ``allow_unknown_duplicates``)."""
        assert self.lost == 0, f"{self.line()}; lost {self.lost_keys[:10]}"
        assert self.pending == 0, self.line()
        assert self.unexplained == 0, self.line()
        if not allow_unknown_duplicates:
            assert self.duplicated == 0, self.line()
        return self


async def rows_by_key(db: Database, keys: Iterable[str]) -> dict[str, MessageRow]:
    wanted = list(keys)
    found: dict[str, MessageRow] = {}
    async with db.read() as session:
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            result = await session.execute(
                select(MessageRow).where(MessageRow.idempotency_key.in_(chunk))
            )
            for row in result.scalars():
                assert row.idempotency_key is not None
                found[row.idempotency_key] = row
    return found


async def compute(
    scenario: str,
    published: Iterable[str],
    server: FaultySMTPServer,
    db: Database,
    *,
    started: float | None = None,
    **notes: Any,
) -> Ledger:
    keys = sorted(set(published))
    rows = await rows_by_key(db, keys)
    copies: collections.Counter[tuple[str | None, str]] = collections.Counter()
    message_ids: dict[str | None, set[str | None]] = collections.defaultdict(set)
    for received in list(server.received):
        message_ids[received.job_key].add(received.message_id)
        for rcpt in received.recipients:
            copies[(received.job_key, rcpt.lower())] += 1
    extras: collections.Counter[str | None] = collections.Counter()
    accepted_by: dict[str | None, set[str]] = collections.defaultdict(set)
    for (k, rcpt), count in copies.items():
        extras[k] += count - 1
        accepted_by[k].add(rcpt)
    ledger = Ledger(scenario, published=len(keys), notes=dict(notes))
    for key in keys:
        row = rows.get(key)
        status = row.status if row is not None else None
        flagged = bool(row is not None and row.possible_duplicate)
        ledger.flagged += flagged
        extra = extras[key]
        ledger.duplicated += extra
        if extra and (not flagged or len(message_ids[key]) != 1):
            ledger.unexplained += extra
        sent_to = (
            {r.lower() for r, s in (row.rcpt_state or {}).items() if s == "sent"}
            if row is not None
            else set()
        )
        accepted = accepted_by.get(key, set())
        if status == "sent" and not sent_to <= accepted:
            ledger.lost += 1  # the store says sent, the relay never had it
            ledger.lost_keys.append(key)
        elif accepted and status in (None, "sent", "dead", *WAITING):
            if status in WAITING:
                ledger.pending += 1
            else:
                ledger.delivered += 1
        elif status == "dead":
            ledger.dead += 1
        elif status in WAITING or status is None:
            ledger.pending += 1
        else:
            ledger.lost += 1
            ledger.lost_keys.append(key)
    if started is not None:
        ledger.seconds = time.monotonic() - started
    return ledger


async def settle(
    keys: Iterable[str],
    db: Database,
    *,
    timeout: float = 60.0,
    expect: int | None = None,
) -> None:
    """Wait until every key has a row in a final state (sent or dead)."""
    wanted = set(keys)
    total = len(wanted) if expect is None else expect

    async def done() -> bool:
        try:
            rows = await rows_by_key(db, wanted)
        except Exception:  # the schema may not exist yet (a worker is starting)
            return False
        return sum(r.status in FINAL for r in rows.values()) >= total

    with contextlib.suppress(AssertionError):  # the ledger says what is missing
        await wait_until(done, timeout, f"{total} jobs sent or dead")
