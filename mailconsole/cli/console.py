"""``mailconsole`` (no subcommand) and ``mailconsole demo``: the console, hosting the
engine in its own event loop, or only observing the shared store and broker.

The engine is started *before* the UI, so a broker that does not answer is one line
on stderr (``BrokerUnavailable`` says how to start RabbitMQ), never a traceback in a
half-drawn screen. While the UI runs, logging goes to a file: a log line written to
the terminal would tear the screen.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import tempfile
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

from mailconsole.cli.common import freeze_startup_objects
from mailconsole.config import Settings
from mailconsole.logsetup import configure

Extra = Callable[[Any], Coroutine[Any, Any, None]]
"""A task run beside the UI with the console's ops (the demo's traffic)."""


def add_console_flags(parser: argparse.ArgumentParser, *, default: Any = False) -> None:
    parser.add_argument(
        "--read-only",
        action="store_true",
        default=default,
        help="console: hide and refuse every action that changes something",
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = sub.add_parser(
        "demo",
        help="the console on embedded defaults with a capture relay and sample traffic",
        description="Open the console with SQLite in a temporary directory, the local "
        "RabbitMQ (queue mailconsole-demo), a built-in SMTP capture server and a "
        "stream of sample mail, including transient and permanent failures.",
    )
    demo.add_argument(
        "--data-dir",
        type=Path,
        help="keep the demo store here (default: a temporary directory)",
    )
    demo.add_argument(
        "--rate", type=float, default=1.5, help="sample jobs per second (default 1.5)"
    )
    add_console_flags(
        demo, default=argparse.SUPPRESS
    )  # keeps `mailconsole --read-only demo`
    demo.set_defaults(command=demo_command)


async def demo_command(args: argparse.Namespace, settings: Settings) -> int:
    from mailconsole.demo.runner import run_demo

    return await run_demo(
        settings, data_dir=args.data_dir, rate=args.rate, read_only=args.read_only
    )


def default_log_path() -> Path:
    return (
        Path(tempfile.gettempdir()) / f"mailconsole-{getpass.getuser()}" / "console.log"
    )


@contextlib.contextmanager
def logging_to_file(settings: Settings, path: Path) -> Iterator[None]:
    """Send log records to ``path`` while the UI owns the terminal."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as stream:
        configure(settings, stream=stream)
        try:
            yield
        finally:
            configure(settings)


async def run_console(args: argparse.Namespace, settings: Settings) -> int:
    """``mailconsole [--no-engine] [--read-only]``."""
    return await host_console(
        settings,
        read_only=getattr(args, "read_only", False),
        observe=getattr(args, "no_engine", False),
    )


async def host_console(
    settings: Settings,
    *,
    read_only: bool = False,
    observe: bool = False,
    capture: Any = None,
    extra: Extra | None = None,
    log_path: Path | None = None,
) -> int:
    """Run the console until the operator quits; start and stop what it hosts.

    Raises:
        BrokerUnavailable: hosting an engine and RabbitMQ did not answer.
    """
    with logging_to_file(settings, log_path or default_log_path()):
        async with hosted_app(settings, read_only, observe, capture) as app:
            task = None
            if extra is not None:
                task = asyncio.create_task(extra(app.ctx.ops))
            freeze_startup_objects()
            try:
                await app.run_async()
            finally:
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
    # Textual sets 1 when the app ended on an unhandled error (after printing it).
    return app.return_code or 0


@contextlib.asynccontextmanager
async def hosted_app(
    settings: Settings, read_only: bool, observe: bool, capture: Any
) -> AsyncIterator[Any]:
    """The console app wired to a started engine (or, observing, to ops of its own);
    the engine is stopped when the block ends. Public for the UI tests, which drive
    exactly this wiring."""
    from mailconsole.app import MailConsoleApp
    from mailconsole.screens.context import ConsoleContext

    actor = f"{getpass.getuser()}@console"
    if observe:
        from mailconsole.engine.ops import Ops

        ops = await Ops.open(settings, broker="optional", actor=actor)
        try:
            ctx = ConsoleContext(
                ops=ops,
                clock=ops.clock,
                read_only=read_only,
                observing=True,
                capture=capture,
            )
            yield MailConsoleApp(ctx)
        finally:
            await ops.close()
        return
    from mailconsole.engine.runtime import Engine

    engine = Engine(settings)
    try:
        await engine.start()
        ctx = ConsoleContext(
            ops=engine.ops(actor),
            clock=engine.clock,
            read_only=read_only,
            pool_stats=engine.pool.stats,
            capture=capture,
        )
        yield MailConsoleApp(ctx)
    finally:
        await engine.stop()
