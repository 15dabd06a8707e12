"""Bulk replay or delete of everything a filter shows: plan, confirm, then progress.

1. ``ops.plan`` says how many messages the action would touch (by domain and cause,
   and which it would refuse); nothing changes yet.
2. The operator confirms a question that states the count.
3. The matching ids are collected page by page, then the action runs in batches, so
   the progress bar moves and the run can be paused (between batches) or cancelled
   (what was done stays done; the rest is untouched).

Dismisses with the number of messages acted on.
"""

from __future__ import annotations

import asyncio
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, ProgressBar

from mailconsole.engine.ops import ActionReport, Plan
from mailconsole.screens.context import ConsoleContext
from mailconsole.widgets.formatting import count
from mailconsole.widgets.safe_text import SafeText, safe_join

BATCH = 100
ID_PAGE = 500
TOP = 5
"""Domains and causes listed in the plan."""


def plan_text(plan: Plan, noun: str) -> Text:
    """The plan: count, filter, top domains and causes, refusals."""
    lines = [
        safe_join([(f"{plan.action.capitalize()} {count(plan.count)} {noun}", "bold")]),
        safe_join([("filter ", "dim"), (plan.filter or "(everything)", "")]),
    ]
    for title, rows in (("domains", plan.domains), ("causes", plan.causes)):
        if rows:
            lines.append(Text(title, style="dim"))
            lines += [
                safe_join([(f"  {count(n):>8}  ", ""), (what, "")])
                for what, n in rows[:TOP]
            ]
    if plan.skipped:
        first_id, why = plan.skipped[0]
        refused = max(plan.skipped_count, len(plan.skipped))
        lines.append(
            safe_join(
                [
                    (f"{count(refused)} would be refused, e.g. ", "bold"),
                    (first_id, ""),
                    (": ", ""),
                    (why, "italic"),
                ]
            )
        )
    return Text("\n").join(lines)


class BulkModal(ModalScreen[int]):
    """Plan, confirm and run one bulk action with a pausable progress bar."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "confirm", "Run", id="bulk.confirm"),
        Binding("p,space", "pause", "Pause/resume", id="bulk.pause"),
        Binding("escape,n", "cancel", "Cancel", id="bulk.cancel"),
    ]

    def __init__(
        self, ctx: ConsoleContext, action: str, query: str, noun: str = "messages"
    ) -> None:
        super().__init__()
        self.ctx, self.bulk_action, self.filter_query, self.noun = (
            ctx,
            action,
            query,
            noun,
        )
        self.plan: Plan | None = None
        self.phase = "planning"
        """planning → confirm → running → done"""
        self.done = 0
        self.refused: list[tuple[str, str]] = []
        self._resume = asyncio.Event()
        self._resume.set()
        self._cancelled = False

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(
                f"Bulk {self.bulk_action}", classes="dialog-title", markup=False
            )
            yield SafeText(Text("planning…", style="dim"), id="plan")
            yield ProgressBar(id="progress", show_eta=False, classes="-hidden")
            yield SafeText(id="status")
            with Horizontal(classes="buttons"):
                yield Button("Run (y)", id="run", variant="error", disabled=True)
                yield Button("Pause (p)", id="pause", classes="-hidden")
                yield Button("Cancel (esc)", id="cancel")

    def on_mount(self) -> None:
        self.make_plan()

    @work(exclusive=True, group="bulk-plan", exit_on_error=False)
    async def make_plan(self) -> None:
        try:
            self.plan = await self.ctx.ops.plan(self.bulk_action, self.filter_query)
        except Exception as exc:
            self.query_one("#plan", SafeText).show(f"cannot plan: {exc}")
            return
        self.query_one("#plan", SafeText).update(plan_text(self.plan, self.noun))
        if self.plan.count == 0:
            self.query_one("#status", SafeText).show("nothing to do")
            return
        self.phase = "confirm"
        run = self.query_one("#run", Button)
        run.label = f"{self.bulk_action.capitalize()} {count(self.plan.count)} (y)"
        run.disabled = False
        run.focus()

    def action_confirm(self) -> None:
        if self.phase == "confirm" and not self.ctx.read_only:
            self.phase = "running"
            self.query_one("#run", Button).disabled = True
            self.query_one("#pause").remove_class("-hidden")
            self.query_one("#progress").remove_class("-hidden")
            self.run_bulk()

    def action_pause(self) -> None:
        if self.phase != "running":
            return
        button = self.query_one("#pause", Button)
        if self._resume.is_set():
            self._resume.clear()
            button.label = "Resume (p)"
        else:
            self._resume.set()
            button.label = "Pause (p)"
        self.show_status()

    def action_cancel(self) -> None:
        if self.phase == "running":
            self._cancelled = True
            self._resume.set()
        else:
            self.dismiss(self.done)

    async def collect_ids(self) -> list[str]:
        """Every id the filter matches now, read a page at a time."""
        ids: list[str] = []
        cursor: str | None = None
        while not self._cancelled:
            page = await self.ctx.ops.list_messages(
                self.filter_query, limit=ID_PAGE, cursor=cursor
            )
            ids += [row.id for row in page.items]
            self.show_status(f"collecting ids… {count(len(ids))}")
            if (cursor := page.next_cursor) is None:
                break
        return ids

    @work(exclusive=True, group="bulk-run", exit_on_error=False)
    async def run_bulk(self) -> None:
        ids = await self.collect_ids()
        bar = self.query_one("#progress", ProgressBar)
        bar.update(total=len(ids), progress=0)
        for start in range(0, len(ids), BATCH):
            await self._resume.wait()
            if self._cancelled:
                break
            report = await self.run_batch(ids[start : start + BATCH])
            self.done += len(report.done)
            self.refused += [*report.skipped, *report.failed]
            bar.advance(len(ids[start : start + BATCH]))
            self.show_status()
        self.finish(len(ids))

    async def run_batch(self, ids: list[str]) -> ActionReport:
        reason = f"bulk from the console: {self.filter_query}"
        if self.bulk_action == "delete":
            return await self.ctx.ops.delete(ids, reason=reason)
        return await self.ctx.ops.replay(ids, reason=reason)

    def finish(self, total: int) -> None:
        self.phase = "done"
        verb = "cancelled" if self._cancelled else "finished"
        self.show_status(f"{verb}: {count(self.done)} of {count(total)} done")
        self.query_one("#pause").add_class("-hidden")
        cancel = self.query_one("#cancel", Button)
        cancel.label = "Close (esc)"
        cancel.focus()

    def show_status(self, text: str | None = None) -> None:
        if text is None:
            paused = "" if self._resume.is_set() else "paused · "
            text = f"{paused}{count(self.done)} done"
        parts: list[tuple[str | None, str]] = [(text, "bold")]
        if self.refused:
            first_id, why = self.refused[0]
            parts += [
                (f"  {count(len(self.refused))} refused, e.g. {first_id}: ", "dim"),
                (why, "italic"),
            ]
        self.query_one("#status", SafeText).update(safe_join(parts))

    @on(Button.Pressed, "#run")
    def run_pressed(self) -> None:
        self.action_confirm()

    @on(Button.Pressed, "#pause")
    def pause_pressed(self) -> None:
        self.action_pause()

    @on(Button.Pressed, "#cancel")
    def cancel_pressed(self) -> None:
        self.action_cancel()
