"""``mailconsole list``, ``show``, ``stats`` and ``failures``: the operator's reads.

Also the output helpers the other operator commands share: opening :class:`Ops`,
building filter text from flags, and making untrusted text (subjects, replies,
bodies) inert before it reaches the terminal. Commands go through the ops API
only; they never open a store session or a broker channel themselves.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from mailconsole.cli.common import EXIT_OK, EXIT_USAGE, fail
from mailconsole.config import Settings
from mailconsole.engine import filters
from mailconsole.engine.ops import BrokerMode, Ops, Preview, Stats
from mailconsole.engine.store.dto import MessageDetail, MessageSummary

# CSI/OSC/other escape sequences, then C0 (but tab and newline), DEL, C1, and bidi
# controls: a subject must not be able to move the cursor, set the clipboard (OSC
# 52) or reorder what the operator reads.
_ESCAPES = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|.)?")
_CONTROLS = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)
_SPARK = "▁▂▃▄▅▆▇█"


def safe(text: object, *, one_line: bool = False) -> str:
    """Untrusted text made inert for a terminal."""
    out = _CONTROLS.sub("", _ESCAPES.sub("", str(text)))
    return " ".join(out.split()) if one_line else out


def when(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s >= 86400:
        return f"{s // 86400}d {s % 86400 // 3600}h"
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60}m"
    return f"{s // 60}m {s % 60}s" if s >= 60 else f"{s}s"


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=True))


@asynccontextmanager
async def opened(settings: Settings, broker: BrokerMode) -> AsyncIterator[Ops]:
    # Opening upgrades the schema; alembic's INFO lines on every command would bury
    # the one line an operator needs on stderr.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    ops = await Ops.open(settings, broker=broker)
    try:
        yield ops
    finally:
        await ops.close()


def add_filter_flags(p: argparse.ArgumentParser, *, status_help: str = "") -> None:
    """--status/--search/--to/--since/--until: each becomes a filter term."""
    p.add_argument("--status", help=status_help or "e.g. dead, scheduled, held")
    p.add_argument("--search", help="filter text (docs/filters.md); bare words search")
    p.add_argument("--to", help="recipient address or @domain")
    p.add_argument("--since", help="created since: 2h, 7d or an ISO time")
    p.add_argument("--until", help="created until: 2h (ago), or an ISO time")


def query_from(args: argparse.Namespace, *extra: str) -> str:
    """The filter text of the flags (validated here, so a typo is a usage error)."""
    parts = list(extra)
    for key in ("status", "to", "since", "until"):
        value = getattr(args, key, None)
        if value:
            parts.append(filters.term(key, value))
    if getattr(args, "search", None):
        parts.append(args.search)
    query = " ".join(parts)
    filters.parse(query)
    return query


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("list", help="list messages, newest first")
    p.add_argument(
        "filter", nargs="*", help='filter terms, e.g. status:dead "to:@x.com"'
    )
    add_filter_flags(p)
    p.add_argument("--limit", type=int, default=50, help="at most this many (50)")
    p.add_argument("--json", action="store_true", help="print a JSON array")
    p.set_defaults(command=list_command)
    p = sub.add_parser("show", help="one message: headers, body, attempts, audit")
    p.add_argument("id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(command=show_command)
    p = sub.add_parser("stats", help="counts, queue depth, send rates")
    p.add_argument("--json", action="store_true")
    p.set_defaults(command=stats_command)
    p = sub.add_parser("failures", help="failures grouped by cause, largest first")
    p.add_argument("--status", choices=["dead", "scheduled"], default=None)
    p.add_argument("--search", help="narrow with filter text")
    p.add_argument("--limit", type=int, default=30)
    p.add_argument("--json", action="store_true")
    p.set_defaults(command=failures_command)


def usage_guard(args: argparse.Namespace, *extra: str) -> str | None:
    """The query, or None after printing a usage error for a bad filter."""
    try:
        return query_from(args, *extra)
    except filters.FilterError as exc:
        fail(str(exc), EXIT_USAGE)
        return None


async def list_command(args: argparse.Namespace, settings: Settings) -> int:
    query = usage_guard(args, *args.filter)
    if query is None:
        return EXIT_USAGE
    async with opened(settings, "none") as ops:
        page = await ops.list_messages(query, limit=max(1, args.limit))
    if args.json:
        print_json([m.to_json() for m in page.items])
        return EXIT_OK
    print_table(page.items)
    if page.next_cursor:
        print(
            f"(more match; raise --limit {args.limit} or narrow the filter)",
            file=sys.stderr,
        )
    return EXIT_OK


def print_table(items: Sequence[MessageSummary]) -> None:
    width = shutil.get_terminal_size((120, 24)).columns
    rest = max(20, width - 30 - 10 - 4 - 20 - 8)
    print(f"{'ID':30} {'STATUS':9} {'ATT':>3} {'CREATED':19} TO / SUBJECT / LAST ERROR")
    for m in items:
        to = m.recipients[0] if m.recipients else ""
        if len(m.recipients) > 1:
            to += f" +{len(m.recipients) - 1}"
        tail = " | ".join(x for x in (to, m.subject, m.last_error or "") if x)
        tail = safe(tail, one_line=True)
        tail = tail if len(tail) <= rest else tail[: rest - 1] + "…"
        print(f"{m.id:30} {m.status:9} {m.attempts:>3} {when(m.created_at):19} {tail}")


async def show_command(args: argparse.Namespace, settings: Settings) -> int:
    async with opened(settings, "none") as ops:
        detail = await ops.show(args.id)
        preview = await ops.rendered(args.id)
    if args.json:
        print_json(detail.to_json() | {"rendered": preview.to_json()})
    else:
        print_detail(detail, preview)
    return EXIT_OK


def print_detail(detail: MessageDetail, preview: Preview) -> None:
    s = detail.summary
    rows = [
        ("status", f"{s.status} (attempts {s.attempts})"),
        ("from", s.sender),
        ("to", ", ".join(f"{r} ({st})" for r, st in detail.rcpt_state.items())),
        ("subject", s.subject),
        ("created", when(s.created_at)),
        ("updated", when(s.updated_at)),
        ("next try", when(s.next_attempt_at)),
        ("last error", s.last_error or "-"),
    ]
    if s.possible_duplicate or detail.duplicates:
        rows.append(
            ("duplicates", f"possible={s.possible_duplicate} seen={detail.duplicates}")
        )
    rows += [("edited from", s.edited_from)] if s.edited_from else []
    rows += (
        [("edited into", ", ".join(detail.edited_into))] if detail.edited_into else []
    )
    print(f"Message {s.id}")
    for label, value in rows:
        print(f"  {label:12} {safe(value, one_line=True)}")
    _print_content(detail, preview)
    _print_history(detail)


def _print_content(detail: MessageDetail, preview: Preview) -> None:
    for error in preview.errors:
        print(f"\n(rendering: {safe(error, one_line=True)})")
    if preview.headers:
        print("\nHeaders")
        for name, value in preview.headers:
            print(f"  {safe(name, one_line=True)}: {safe(value, one_line=True)}")
    for title, body in (
        ("Body (text)", preview.text),
        ("Body (HTML source)", preview.html),
    ):
        if body:
            print(f"\n{title}")
            for line in safe(body).splitlines():
                print(f"  {line}")
    if detail.raw_body is not None:
        print("\nRaw body as received (not a valid job)")
        print("  " + safe(detail.raw_body.decode("utf-8", errors="replace"))[:4000])


def _print_history(detail: MessageDetail) -> None:
    print("\nAttempts" if detail.attempts else "\nAttempts: none")
    for a in detail.attempts:
        code = " ".join(str(c) for c in (a.code, a.enhanced) if c)
        line = f"#{a.number} {when(a.started_at)} {a.duration_ms} ms {a.outcome}"
        line += f" at {a.stage}" if a.stage else ""
        print("  " + safe(f"{line} {code} {a.reply or ''}", one_line=True))
        for reply in a.replies:
            who, said = reply.get("recipient"), reply.get("code")
            text = f"{who}: {said} {reply.get('text') or ''}"
            print("      " + safe(text, one_line=True))
    print("\nAudit" if detail.audit else "\nAudit: no operator actions")
    for e in detail.audit:
        why = f' "{e.reason}"' if e.reason else ""
        extra = {k: v for k, v in e.details.items() if k != "action_id"}
        entry = f"{when(e.at)} {e.actor} {e.action}{why} {json.dumps(extra)}"
        print("  " + safe(entry, one_line=True))


async def stats_command(args: argparse.Namespace, settings: Settings) -> int:
    async with opened(settings, "optional") as ops:
        stats = await ops.stats()
    if args.json:
        print_json(stats.to_json())
    else:
        print_stats(stats)
    return EXIT_OK


def print_stats(st: Stats) -> None:
    counts = "  ".join(f"{k} {v}" for k, v in st.by_status.items())
    unknown = "unknown"
    ready = unknown if st.queue_ready is None else st.queue_ready
    unacked = unknown if st.queue_unacked is None else st.queue_unacked
    consumers = unknown if st.consumers is None else st.consumers
    print(f"messages        {counts}")
    print(f"queue           ready {ready}  unacked {unacked}  consumers {consumers}")
    for label, minute, hour in (
        ("sent", st.sent_last_minute, st.sent_last_hour),
        ("failed", st.failed_last_minute, st.failed_last_hour),
    ):
        print(f"{label:15} last minute {minute}  last hour {hour}")
    print(f"oldest waiting  {age(st.oldest_waiting_age)}")
    print(f"sent/min 30m    {spark(st.sent_per_minute)}")
    print(f"failed/min 30m  {spark(st.failed_per_minute)}")


def spark(values: Sequence[int]) -> str:
    top = max(values, default=0)
    if not top:
        return "·" * len(values)
    return "".join(_SPARK[min(7, v * 8 // (top + 1))] if v else "·" for v in values)


async def failures_command(args: argparse.Namespace, settings: Settings) -> int:
    extra = [filters.term("status", args.status)] if args.status else []
    query = " ".join([*extra, args.search or ""]).strip()
    try:
        filters.parse(query)
    except filters.FilterError as exc:
        return fail(str(exc), EXIT_USAGE)
    async with opened(settings, "none") as ops:
        groups = await ops.failures(query, limit=max(1, args.limit))
    if args.json:
        print_json([g.to_json() for g in groups])
        return EXIT_OK
    if not groups:
        print("no failures")
    for g in groups:
        codes = " ".join(str(c) for c in (g.code, g.enhanced) if c) or "-"
        print(
            f"{g.count:>7}  group:{g.key}  {codes:9} @{safe(g.domain, one_line=True)}"
            f"  {when(g.first_seen)} .. {when(g.last_seen)}  e.g. {g.example_id}"
        )
        print(f"         {safe(g.reply, one_line=True)}")
    return EXIT_OK
