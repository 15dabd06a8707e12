"""``mailconsole suppress add|remove|list``: addresses mail is never sent to.

The engine adds hard bounces by itself and refuses suppressed recipients when a
message arrives; this is the operator's hand on the same list. Every change is
audited. Commands only call the ops API.
"""

from __future__ import annotations

import argparse

from mailconsole.cli.common import EXIT_OK, EXIT_USAGE, fail
from mailconsole.cli.messages import opened, print_json, safe, when
from mailconsole.config import Settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("suppress", help="the suppression list (never send to these)")
    verbs = p.add_subparsers(
        dest="suppress_command", required=True, metavar="add|remove|list"
    )
    add = verbs.add_parser("add", help="never send to ADDRESS")
    add.add_argument("address")
    remove = verbs.add_parser("remove", help="allow ADDRESS again")
    remove.add_argument("address")
    for q in (add, remove):
        q.add_argument("--reason", help="why (kept in the audit)")
        q.add_argument("--yes", "-y", action="store_true", help="accepted for symmetry")
        q.add_argument("--dry-run", action="store_true", help="change nothing")
    listing = verbs.add_parser("list", help="the listed addresses, newest first")
    listing.add_argument(
        "address", nargs="?", default="", help="only those containing this"
    )
    listing.add_argument("--json", action="store_true")
    add.set_defaults(command=add_command)
    remove.set_defaults(command=remove_command)
    listing.set_defaults(command=list_command)


async def add_command(args: argparse.Namespace, settings: Settings) -> int:
    if args.dry_run:
        print(f"would add {safe(args.address, one_line=True)} to the suppression list")
        return EXIT_OK
    async with opened(settings, "none") as ops:
        added = await ops.suppress(args.address, reason=args.reason)
    verb = "suppressed" if added else "already suppressed"
    print(f"{verb}: {safe(args.address, one_line=True)}")
    return EXIT_OK


async def remove_command(args: argparse.Namespace, settings: Settings) -> int:
    async with opened(settings, "none") as ops:
        if args.dry_run:
            listed = [a for a, _, _ in await ops.suppressions(args.address.strip())]
            if args.address.strip().lower() not in listed:
                return fail(f"{args.address} is not on the suppression list")
            print(f"would remove {safe(args.address, one_line=True)}")
            return EXIT_OK
        await ops.unsuppress(args.address, reason=args.reason)
    print(f"removed: {safe(args.address, one_line=True)}")
    return EXIT_OK


async def list_command(args: argparse.Namespace, settings: Settings) -> int:
    if len(args.address) > 320:
        return fail("address filter too long", EXIT_USAGE)
    async with opened(settings, "none") as ops:
        rows = await ops.suppressions(args.address)
    if args.json:
        print_json(
            [{"address": a, "reason": r, "since": at.isoformat()} for a, r, at in rows]
        )
        return EXIT_OK
    for address, reason, since in rows:
        shown = safe(address, one_line=True)
        print(f"{shown:40} {when(since)}  {safe(reason, one_line=True)}")
    return EXIT_OK
