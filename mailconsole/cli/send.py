"""``mailconsole send``: publish one job from flags, or jobs from JSON / JSON lines."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from mailconsole.cli.common import EXIT_OK, EXIT_USAGE, fail
from mailconsole.config import Settings
from mailconsole.engine.broker import Broker
from mailconsole.engine.publisher import publish_jobs
from mailconsole.engine.wire import WireError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("send", help="publish mail jobs to the queue")
    p.add_argument("--from", dest="sender", help='"Name <addr>" or addr')
    p.add_argument("--to", action="append", default=[], help="repeatable")
    p.add_argument("--cc", action="append", default=[])
    p.add_argument("--bcc", action="append", default=[])
    p.add_argument("--subject", default="")
    p.add_argument("--text", help="plain-text body")
    p.add_argument("--html", help="HTML body")
    p.add_argument("--template", help="template name in the templates directory")
    p.add_argument("--context", help="template variables as a JSON object")
    p.add_argument("--send-at", help="ISO-8601 time with offset")
    p.add_argument("--id", help="idempotency key (generated when absent)")
    p.add_argument(
        "--json", dest="json_file", help="FILE or - : one JSON object or JSON lines"
    )
    p.set_defaults(command=command)


def _from_flags(args: argparse.Namespace) -> dict[str, Any]:
    job: dict[str, Any] = {"from": args.sender, "to": args.to, "subject": args.subject}
    for key in ("cc", "bcc"):
        if getattr(args, key):
            job[key] = getattr(args, key)
    for key, value in (
        ("text", args.text),
        ("html", args.html),
        ("template", args.template),
        ("send_at", args.send_at),
        ("id", args.id),
    ):
        if value is not None:
            job[key] = value
    if args.context:
        job["context"] = json.loads(args.context)
    return job


def _from_json(source: str) -> list[dict[str, Any]]:
    text = (
        sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    )
    stripped = text.strip()
    if not stripped:
        return []
    try:
        one = json.loads(stripped)
    except json.JSONDecodeError:
        return [json.loads(line) for line in stripped.splitlines() if line.strip()]
    return one if isinstance(one, list) else [one]


async def command(args: argparse.Namespace, settings: Settings) -> int:
    try:
        if args.json_file:
            jobs = _from_json(args.json_file)
        elif args.sender and args.to:
            jobs = [_from_flags(args)]
        else:
            return fail("send needs --from and --to, or --json FILE", EXIT_USAGE)
    except (OSError, json.JSONDecodeError) as exc:
        return fail(f"cannot read jobs: {exc}", EXIT_USAGE)
    broker = Broker(
        settings.amqp_url.get_secret_value(),
        settings.queue,
        publish_timeout=settings.publish_timeout,
    )
    await broker.connect()
    try:
        ids = await publish_jobs(broker, jobs)
    except WireError as exc:
        return fail(f"invalid job: {exc}", EXIT_USAGE)
    finally:
        await broker.close()
    for message_id in ids:
        print(message_id)
    return EXIT_OK
