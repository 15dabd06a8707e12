"""Edit-then-replay: correct a dead message and queue the corrected copy.

The form is filled from the stored job, checked with ``ops.validate`` as the operator
types, and saved with ``ops.edit`` (which keeps the original and links the copy to
it). Dismisses with the new message's id, or ``None`` when cancelled.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.timer import Timer
from textual.widgets import Button, Footer, Input, Label

from mailconsole.engine.errors import MailconsoleError
from mailconsole.screens.context import ConsoleContext
from mailconsole.widgets.job_form import JobForm
from mailconsole.widgets.safe_text import SafeText, safe_text, visible

VALIDATE_DELAY = 0.3


def problems_text(problems: list[str]) -> Text:
    if not problems:
        return Text("✓ valid", style="bold")
    return Text("\n").join(safe_text(f"✗ {p}", single_line=True) for p in problems)


class EditModal(ModalScreen[str | None]):
    """A corrected copy of one dead message."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "save", "Save & replay", id="edit.save", priority=True),
        Binding("escape", "cancel", "Cancel", id="edit.cancel"),
    ]

    def __init__(self, ctx: ConsoleContext, message_id: str) -> None:
        super().__init__()
        self.ctx = ctx
        self.message_id = message_id
        self._timer: Timer | None = None
        self.loaded = False

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog -wide"):
            yield Label(
                f"Edit {self.message_id} and replay a corrected copy",
                classes="dialog-title",
                markup=False,
            )
            yield JobForm(id="edit-form")
            with Horizontal(classes="reason-row"):
                yield Label("Reason ")
                yield Input(
                    placeholder="why (kept in the audit)", id="reason", compact=True
                )
            yield SafeText(id="problems")
            with Horizontal(classes="buttons"):
                yield Button("Save & replay (ctrl+s)", id="save", variant="primary")
                yield Button("Cancel (esc)", id="cancel")
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        self.load()

    @work(exclusive=True, group="edit-load", exit_on_error=False)
    async def load(self) -> None:
        try:
            detail = await self.ctx.ops.show(self.message_id)
        except MailconsoleError as exc:
            self.query_one("#problems", SafeText).show(str(exc))
            return
        form = self.query_one(JobForm)
        if detail.payload is None:
            self.query_one("#problems", SafeText).show(
                "no valid job stored; cannot edit"
            )
            return
        form.load(detail.payload)
        self.loaded = True
        self.query_one("#field-from", Input).focus()

    def problems(self) -> tuple[dict[str, object], list[str]]:
        job, problems = self.query_one(JobForm).job(self.ctx.clock.now())
        return job, problems + self.ctx.ops.validate(job)

    @on(JobForm.Changed)
    def changed(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_timer(VALIDATE_DELAY, self.validate)

    def validate(self) -> None:
        _job, problems = self.problems()
        self.query_one("#problems", SafeText).update(problems_text(problems))

    def action_cancel(self) -> None:
        self.dismiss(None)

    def action_save(self) -> None:
        if self.ctx.read_only or not self.loaded:
            return
        job, problems = self.problems()
        if problems:
            self.query_one("#problems", SafeText).update(problems_text(problems))
            self.notify("fix the problems first", severity="warning")
            return
        self.save(job)

    @work(exclusive=True, group="edit-save", exit_on_error=False)
    async def save(self, job: dict[str, object]) -> None:
        reason = (
            self.query_one("#reason", Input).value.strip() or "edited in the console"
        )
        try:
            new_id = await self.ctx.ops.edit(self.message_id, job, reason=reason)
        except MailconsoleError as exc:
            self.notify(
                visible(str(exc)), title="Not saved", severity="error", markup=False
            )
            return
        self.dismiss(new_id)

    @on(Button.Pressed, "#save")
    def save_pressed(self) -> None:
        self.action_save()

    @on(Button.Pressed, "#cancel")
    def cancel_pressed(self) -> None:
        self.dismiss(None)
