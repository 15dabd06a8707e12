"""Compose: write a message (or pick a template with a JSON context), see it as it
will be sent, and send it.

The form is checked with ``ops.validate`` as the operator types; ``ops.preview``
renders it; ``ops.send`` publishes it and the new id is shown. Read-only consoles
can still write and preview, but not send.
"""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.timer import Timer
from textual.widgets import Button, Footer

from mailconsole.screens.base import ConsoleScreen
from mailconsole.screens.context import ConsoleContext
from mailconsole.screens.edit import VALIDATE_DELAY, problems_text
from mailconsole.screens.preview import PreviewModal
from mailconsole.widgets.job_form import JobForm
from mailconsole.widgets.safe_text import SafeText, safe_join


class ComposeScreen(ConsoleScreen):
    """A new message: validated as you type, previewed, sent."""

    CSS_PATH = "compose.tcss"

    NAV = "compose"
    AUTO_FOCUS = (
        "#field-from"  # not the form's scroll container: typing goes in at once
    )
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "send", "Send", id="compose.send", priority=True),
        Binding("ctrl+o", "preview", "Preview", id="compose.preview", priority=True),
        Binding("escape", "leave_field", "Leave field", id="compose.leave", show=False),
    ]
    MUTATIONS: ClassVar[frozenset[str]] = frozenset({"send"})

    def __init__(self, ctx: ConsoleContext) -> None:
        super().__init__(ctx)
        self._timer: Timer | None = None
        self.sent: list[str] = []

    def compose(self) -> ComposeResult:
        yield self.nav_bar()
        yield JobForm(id="compose-form")
        yield SafeText(
            Text("Fill in from, to, a subject and a body or template.", style="dim"),
            id="problems",
        )
        with Horizontal(classes="buttons"):
            yield Button("Preview (ctrl+o)", id="preview")
            if not self.ctx.read_only:
                yield Button("Send (ctrl+s)", id="send", variant="primary")
        yield SafeText(id="sent")
        yield Footer(show_command_palette=False)

    def job(self) -> tuple[dict[str, Any], list[str]]:
        job, problems = self.query_one(JobForm).job(self.now())
        return job, problems + self.ctx.ops.validate(job)

    @on(JobForm.Changed)
    def changed(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_timer(VALIDATE_DELAY, self.validate)

    def validate(self) -> list[str]:
        _job, problems = self.job()
        self.query_one("#problems", SafeText).update(problems_text(problems))
        return problems

    def action_leave_field(self) -> None:
        self.set_focus(None)

    def action_preview(self) -> None:
        job, problems = self.job()
        self.query_one("#problems", SafeText).update(problems_text(problems))
        self.app.push_screen(PreviewModal(self.ctx.ops.preview(job), problems))

    def action_send(self) -> None:
        if self.refused():
            return
        job, problems = self.job()
        self.query_one("#problems", SafeText).update(problems_text(problems))
        if problems:
            self.notify("fix the problems before sending", severity="warning")
            return
        self.send(job)

    @work(exclusive=True, group="compose-send", exit_on_error=False)
    async def send(self, job: dict[str, Any]) -> None:
        message_id = await self.ctx.ops.send(job)
        self.sent.append(message_id)
        self.query_one("#sent", SafeText).update(
            safe_join(
                [
                    ("sent  ", "bold"),
                    (message_id, "bold underline"),
                    ("  queued for delivery", "dim"),
                ]
            )
        )
        self.notify(f"sent: {message_id}", markup=False)

    @on(Button.Pressed, "#preview")
    def preview_pressed(self) -> None:
        self.action_preview()

    @on(Button.Pressed, "#send")
    def send_pressed(self) -> None:
        self.action_send()
