"""``mailconsole export`` and ``import``: dead mail out to JSON lines and back in.

``export`` writes one ``{"job": ..., "meta": ...}`` object per line (the extended
job as stored, plus its id, status, attempts, errors and recipient states);
``import`` publishes each job again as a *new* job through the same validation as
``send`` (``--keep-ids`` keeps the original idempotency keys, for moving mail to
another installation without ever sending it twice). Commands only call ops.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from mailconsole.cli.actions import add_write_flags, confirm
from mailconsole.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, fail
from mailconsole.cli.messages import add_filter_flags, opened, print_json, usage_guard
from mailconsole.config import Settings
from mailconsole.engine import filters


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("export", help="write matching messages as JSON lines")
    add_filter_flags(p, status_help="default dead")
    p.add_argument("--output", "-o", help="FILE instead of stdout")
    p.add_argument("--reason", help="why (kept in the audit)")
    p.set_defaults(command=export_command)
    p = sub.add_parser("import", help="publish jobs from an export file as new jobs")
    p.add_argument("file", help="JSON lines from `export` (or plain jobs); - for stdin")
    p.add_argument(
        "--keep-ids",
        action="store_true",
        help="keep each job's id: re-importing never sends twice",
    )
    add_write_flags(p)
    p.set_defaults(command=import_command)


async def export_command(args: argparse.Namespace, settings: Settings) -> int:
    extra = [] if args.status else [filters.term("status", "dead")]
    query = usage_guard(args, *extra)
    if query is None:
        return EXIT_USAGE
    count = 0
    with contextlib.ExitStack() as stack:
        out: TextIO = sys.stdout
        if args.output:
            # A local file written line by line: blocking briefly is fine in a CLI.
            out = stack.enter_context(open(args.output, "w", encoding="utf-8"))  # noqa: ASYNC230
        async with opened(settings, "none") as ops:
            async for record in ops.export_jobs(query, reason=args.reason):
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
                count += 1
    print(f"exported {count} messages", file=sys.stderr)
    return EXIT_OK


def read_jobs(text: str, *, keep_ids: bool) -> tuple[list[dict[str, Any]], list[str]]:
    """Jobs from export lines or plain job lines; returns them and problems
    ("line N: why") for lines that cannot be imported."""
    jobs: list[dict[str, Any]] = []
    problems: list[str] = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"line {n}: not JSON ({exc.msg})")
            continue
        job = record.get("job", record) if isinstance(record, dict) else None
        if not isinstance(job, dict):
            problems.append(f"line {n}: no valid job (rejected on arrival; use `edit`)")
            continue
        if not keep_ids:
            job = {k: v for k, v in job.items() if k != "id"}
        jobs.append(job)
    return jobs, problems


async def import_command(args: argparse.Namespace, settings: Settings) -> int:
    try:
        if args.file == "-":
            text = sys.stdin.read()
        else:
            text = await asyncio.to_thread(Path(args.file).read_text, encoding="utf-8")
    except OSError as exc:
        return fail(f"cannot read {args.file}: {exc.strerror}", EXIT_USAGE)
    jobs, problems = read_jobs(text, keep_ids=args.keep_ids)
    async with opened(settings, "none" if args.dry_run else "required") as ops:
        for n, job in enumerate(jobs, start=1):
            problems += [f"job {n}: {p}" for p in ops.validate(job)]
        if problems:
            for problem in problems[:20]:
                print(f"mailconsole: {problem}", file=sys.stderr)
            return fail(f"{len(problems)} invalid; nothing imported")
        print(f"plan: import {len(jobs)} jobs as new messages", file=sys.stderr)
        if args.dry_run or not jobs:
            print(f"would import {len(jobs)}" if args.dry_run else "nothing to import")
            return EXIT_OK
        if not args.yes:
            answer = await confirm(f"import {len(jobs)} jobs?")
            if answer is not True:
                return EXIT_USAGE if answer is None else EXIT_FAILED
        ids = await ops.import_jobs(jobs, reason=args.reason)
    if args.json:
        print_json({"imported": ids})
    else:
        print(f"imported {len(ids)}")
    return EXIT_OK
