"""``mailconsole replay``, ``retry-now``, ``hold``, ``release``, ``delete``, ``edit``.

Each takes message ids, or filter flags and/or ``--all`` (a bulk action; ``--all``
alone takes the action's default filter, e.g. every dead message): a bulk action
prints its plan (how many, recipient domains, failure causes, what it would refuse),
asks on a terminal unless ``--yes``, reports progress on stderr when that is a
terminal, and ends with a summary. ``--dry-run`` changes nothing; ``--reason`` goes
into the audit. Exit 0 when done, 1 when a message could not be acted on (each
named on stderr), 2 for usage. Commands only call the ops API.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailconsole.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, fail
from mailconsole.cli.messages import (
    add_filter_flags,
    opened,
    print_json,
    safe,
    usage_guard,
)
from mailconsole.config import Settings
from mailconsole.engine import filters
from mailconsole.engine.errors import MailconsoleError
from mailconsole.engine.ops import ActionReport, BrokerMode, Ops, Plan
from mailconsole.engine.wire import WireError

SHOWN = 20
"""Skipped or failed messages listed one per line; the rest are counted."""


@dataclass(frozen=True, slots=True)
class Verb:
    name: str
    done: str
    """Past tense for the summary: "replayed 12"."""
    default_status: str | None
    broker: BrokerMode
    help: str


VERBS = {
    "replay": Verb(
        "replay", "replayed", "dead", "required", "queue dead messages again"
    ),
    "retry-now": Verb(
        "retry-now", "made due", "scheduled", "none", "make scheduled messages due now"
    ),
    "hold": Verb("hold", "held", None, "none", "keep waiting messages from sending"),
    "release": Verb("release", "released", "held", "required", "release held messages"),
    "delete": Verb(
        "delete", "deleted", None, "none", "remove waiting or dead messages"
    ),
}


def add_write_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--yes", "-y", action="store_true", help="do not ask")
    p.add_argument("--dry-run", action="store_true", help="show what would change")
    p.add_argument("--reason", help="why (kept in the audit)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for verb in VERBS.values():
        p = sub.add_parser(verb.name, help=verb.help)
        p.add_argument("ids", nargs="*", metavar="ID")
        p.add_argument(
            "--all", action="store_true", help="every message the filter selects"
        )
        status = f"default {verb.default_status}" if verb.default_status else ""
        add_filter_flags(p, status_help=status)
        if verb.name == "replay":
            p.add_argument(
                "--force",
                action="store_true",
                help="also messages the relay accepted for some recipients",
            )
            p.add_argument(
                "--rate", type=_rate, help="at most N messages a second (N or N/s)"
            )
        if verb.name == "delete":
            p.add_argument("--older-than", help="created more than DURATION ago (7d)")
        add_write_flags(p)
        p.set_defaults(command=_command(verb))
    register_edit(sub)


def _rate(text: str) -> float:
    try:
        value = float(text.removesuffix("/s"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a rate: {text!r} (e.g. 50 or 50/s)"
        ) from None
    if value <= 0:
        raise argparse.ArgumentTypeError("the rate must be positive")
    return value


def _command(verb: Verb) -> Callable[[argparse.Namespace, Settings], Awaitable[int]]:
    async def command(args: argparse.Namespace, settings: Settings) -> int:
        return await run_action(verb, args, settings)

    return command


async def run_action(verb: Verb, args: argparse.Namespace, settings: Settings) -> int:
    if args.ids and (args.all or _has_filter(args)):
        return fail(
            f"{verb.name}: give message ids, or a filter (--all, --status ...), "
            "not both",
            EXIT_USAGE,
        )
    # Filter flags select by themselves (`delete --status dead --older-than 7d`);
    # --all alone means everything the action's default filter selects.
    if not args.ids and not (args.all or _has_filter(args)):
        return fail(
            f"{verb.name}: give message ids, or --all and/or filter flags", EXIT_USAGE
        )
    broker: BrokerMode = "none" if args.dry_run else verb.broker
    if args.ids:
        async with opened(settings, broker) as ops:
            report = await _call(ops, verb, args, ids=args.ids)
        return _finish(verb, args, report, strict=True)
    query = _bulk_query(verb, args)
    if query is None:
        return EXIT_USAGE
    async with opened(settings, broker) as ops:
        plan = await ops.plan(verb.name, query, force=getattr(args, "force", False))
        print_plan(plan)
        if not plan.count:
            print(f"nothing to {verb.name}", file=sys.stderr)
            return _finish(verb, args, ActionReport(verb.name, ()), strict=False)
        if not args.dry_run and not args.yes:
            answer = await confirm(f"{verb.name} {plan.count} messages?")
            if answer is not True:
                return EXIT_USAGE if answer is None else EXIT_FAILED
        report = await _call(ops, verb, args, query=query)
    return _finish(verb, args, report, strict=False)


def _has_filter(args: argparse.Namespace) -> bool:
    keys = ("status", "search", "to", "since", "until", "older_than")
    return any(getattr(args, k, None) for k in keys)


def _bulk_query(verb: Verb, args: argparse.Namespace) -> str | None:
    """The filter of a bulk action; ``delete`` wants one, so "--all" alone cannot
    empty the queue by accident."""
    extra = []
    if verb.default_status and not args.status:
        extra.append(filters.term("status", verb.default_status))
    if getattr(args, "older_than", None):
        extra.append(filters.term("until", args.older_than))
    if verb.name == "delete" and not (extra or _has_filter(args)):
        fail(
            "delete --all needs a filter (--status, --older-than, --search ...)",
            EXIT_USAGE,
        )
        return None
    return usage_guard(args, *extra)


async def _call(
    ops: Ops,
    verb: Verb,
    args: argparse.Namespace,
    *,
    ids: list[str] | None = None,
    query: str | None = None,
) -> ActionReport:
    common: dict[str, Any] = {
        "query": query,
        "reason": args.reason,
        "dry_run": args.dry_run,
    }
    targets = ids or ()
    if verb.name == "replay":
        progress = (
            _progress(verb) if query is not None and sys.stderr.isatty() else None
        )
        return await ops.replay(
            targets, force=args.force, rate=args.rate, progress=progress, **common
        )
    method = {
        "retry-now": ops.retry_now,
        "hold": ops.hold,
        "release": ops.release,
        "delete": ops.delete,
    }[verb.name]
    return await method(targets, **common)


def _progress(verb: Verb) -> Callable[[int, int], None]:
    def show(done: int, total: int) -> None:
        end = "\n" if done >= total else ""
        print(f"\r{verb.name}: {done}/{total}", end=end, file=sys.stderr, flush=True)

    return show


async def confirm(question: str) -> bool | None:
    """Ask on a terminal. ``None``: no terminal to ask on (so --yes is needed)."""
    if not sys.stdin.isatty():
        fail("not a terminal, so not asking: add --yes to go ahead", EXIT_USAGE)
        return None
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    try:
        answer = await asyncio.to_thread(sys.stdin.readline)
    except (EOFError, KeyboardInterrupt):
        answer = ""
    if answer.strip().lower() in ("y", "yes"):
        return True
    print("not done", file=sys.stderr)
    return False


def print_plan(plan: Plan) -> None:
    out = sys.stderr
    print(
        f"plan: {plan.action} {plan.count} messages matching {plan.filter!r}", file=out
    )
    if plan.domains:
        domains = ", ".join(f"{safe(d, one_line=True)} {n}" for d, n in plan.domains)
        print(f"  recipient domains: {domains}", file=out)
    for label, n in plan.causes:
        print(f"  cause: {n:>6}  {safe(label, one_line=True)}", file=out)
    if plan.skipped_count:
        print(f"  would skip {plan.skipped_count}:", file=out)
        for message_id, why in plan.skipped[:5]:
            print(f"    {message_id}: {safe(why, one_line=True)}", file=out)


def _finish(
    verb: Verb, args: argparse.Namespace, report: ActionReport, *, strict: bool
) -> int:
    """Print the summary; 1 when something failed, or (for ids) was skipped."""
    if args.json:
        print_json(report.to_json())
    else:
        would = "would be " if report.dry_run else ""
        print(
            f"{would}{verb.done} {len(report.done)}, skipped {len(report.skipped)}, "
            f"failed {len(report.failed)}"
        )
    for kind, entries in (("skipped", report.skipped), ("failed", report.failed)):
        for message_id, why in entries[:SHOWN]:
            print(
                f"mailconsole: {message_id} {kind}: {safe(why, one_line=True)}",
                file=sys.stderr,
            )
        if len(entries) > SHOWN:
            print(
                f"mailconsole: ... and {len(entries) - SHOWN} more {kind}",
                file=sys.stderr,
            )
    if report.failed or (strict and report.skipped):
        return EXIT_FAILED
    return EXIT_OK


# -- edit ---------------------------------------------------------------------------
def register_edit(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "edit", help="fix a dead or held message; the fix is sent as a new message"
    )
    p.add_argument("id")
    p.add_argument(
        "--json",
        dest="json_file",
        metavar="FILE",
        help="the corrected job from FILE (- for stdin) instead of $EDITOR",
    )
    p.add_argument("--yes", "-y", action="store_true", help="accepted for symmetry")
    p.add_argument("--dry-run", action="store_true", help="validate only")
    p.add_argument("--reason", help="why (kept in the audit)")
    p.set_defaults(command=edit_command)


async def edit_command(args: argparse.Namespace, settings: Settings) -> int:
    if args.json_file is None and not (sys.stdin.isatty() and sys.stdout.isatty()):
        return fail("edit needs a terminal for $EDITOR, or --json FILE", EXIT_USAGE)
    async with opened(settings, "none" if args.dry_run else "required") as ops:
        detail = await ops.show(args.id)
        if detail.summary.status not in ("dead", "held"):
            return fail(
                f"{args.id} is {detail.summary.status}; only dead or held messages "
                "can be edited"
            )
        if args.json_file is not None:
            return await _save_edit(ops, args, _read_source(args.json_file), None)
        original = editable_text(detail.payload, detail.raw_body)
        edited, kept = await edit_in_editor(original)
        if edited is None:
            return fail("no changes made; nothing saved")
        return await _save_edit(ops, args, edited, kept)


def editable_text(payload: dict[str, Any] | None, raw: bytes | None) -> str:
    """The job as the operator edits it: pretty JSON without the id (the copy gets
    its own), or the raw body when it never was a valid job."""
    if payload is None:
        return (raw or b"").decode("utf-8", errors="replace")
    job = {k: v for k, v in payload.items() if k != "id"}
    return json.dumps(job, indent=2, ensure_ascii=False) + "\n"


async def edit_in_editor(original: str) -> tuple[str | None, str]:
    """Open $VISUAL/$EDITOR on a temporary file; ``None`` when nothing changed. The
    file is kept (its path returned) so a rejected edit is not lost."""
    fd, name = tempfile.mkstemp(prefix="mailconsole-edit-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(original)
    # The operator's own editor is a property of their terminal session, not a
    # mailconsole setting, so it is read here rather than through config.py.
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    process = await asyncio.create_subprocess_exec(*shlex.split(editor), name)
    if await process.wait() != 0:
        raise MailconsoleError(
            f"{editor} exited with {process.returncode}; nothing saved"
        )
    text = await asyncio.to_thread(Path(name).read_text, encoding="utf-8")
    return (None if text == original else text), name


async def _save_edit(
    ops: Ops, args: argparse.Namespace, text: str, kept: str | None
) -> int:
    keep = f" (your edit is kept in {kept})" if kept else ""
    try:
        job = json.loads(text)
    except json.JSONDecodeError as exc:
        return fail(f"not valid JSON: {exc}{keep}; nothing saved")
    if not isinstance(job, dict):
        return fail(f"the job must be a JSON object{keep}; nothing saved")
    try:
        new_id = await ops.edit(args.id, job, reason=args.reason, dry_run=args.dry_run)
    except WireError as exc:
        return fail(f"invalid job: {exc}{keep}; nothing saved")
    if args.dry_run:
        print(f"valid: would store a corrected copy of {args.id} and queue it")
    else:
        print(new_id)
        print(f"{new_id} queued, a corrected copy of {args.id}", file=sys.stderr)
    return EXIT_OK


def _read_source(source: str) -> str:
    if source == "-":
        return sys.stdin.read()
    try:
        return Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise MailconsoleError(f"cannot read {source}: {exc.strerror}") from None
