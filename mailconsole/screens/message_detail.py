"""One message: its timeline, headers, text body, html source and raw job.

Opened with Enter from any list. The actions offered follow the message's state
(a dead message can be replayed or edited, a scheduled one retried now or held),
which is what the list it came from offered for it. Everything shown is stored
data from producers and relays, so it all goes through the sanitiser.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widgets import Footer, TabbedContent, TabPane

from mailconsole.engine.ops import Preview
from mailconsole.engine.store.dto import MessageDetail
from mailconsole.screens.base import ConsoleScreen, error_text
from mailconsole.screens.confirm import ConfirmModal
from mailconsole.screens.context import ConsoleContext
from mailconsole.screens.edit import EditModal
from mailconsole.widgets.attempt_timeline import AttemptTimeline
from mailconsole.widgets.formatting import relative
from mailconsole.widgets.safe_text import SafeText, safe_join, visible

TABS = ("timeline", "headers", "text", "html", "raw")
ALLOWED: dict[str, frozenset[str]] = {
    "replay": frozenset({"dead"}),
    "edit": frozenset({"dead"}),
    "retry_now": frozenset({"scheduled"}),
    "hold": frozenset({"queued", "scheduled"}),
    "release": frozenset({"held"}),
    "delete": frozenset({"queued", "scheduled", "held", "dead", "sent"}),
}


def head_text(detail: MessageDetail, now: datetime) -> Text:
    """Id, state, subject, addresses and links, a few lines."""
    s = detail.summary
    lines = [
        safe_join(
            [
                (s.id, "bold"),
                ("  ", ""),
                (s.status.upper(), "bold reverse"),
                (f"  attempts {s.attempts}", "dim"),
                ("  possible duplicate" if s.possible_duplicate else "", "bold"),
            ]
        ),
        safe_join([("Subject ", "dim"), (s.subject, "bold")]),
        safe_join(
            [
                ("From ", "dim"),
                (s.sender, ""),
                ("  To ", "dim"),
                (", ".join(s.recipients), ""),
            ]
        ),
    ]
    if s.last_error and s.status != "sent":
        lines.append(safe_join([("Last error ", "dim"), (s.last_error, "italic")]))
    if s.next_attempt_at is not None and s.status == "scheduled":
        lines.append(
            safe_join([("Next try ", "dim"), (relative(s.next_attempt_at, now), "")])
        )
    links = [("Edited from ", s.edited_from)] if s.edited_from else []
    links += [("Edited into ", copy) for copy in detail.edited_into]
    for label, target in links:
        lines.append(
            safe_join([(label, "dim"), (target, "underline"), ("  (o opens)", "dim")])
        )
    return Text("\n", no_wrap=True, overflow="ellipsis").join(lines)


def headers_text(preview: Preview) -> Text:
    return Text("\n").join(
        safe_join([(f"{name}: ", "bold"), (value, "")])
        for name, value in preview.headers
    )


def raw_text(detail: MessageDetail) -> str:
    if detail.payload is not None:
        return json.dumps(detail.payload, indent=2, ensure_ascii=False)
    if detail.raw_body is not None:
        return detail.raw_body.decode("utf-8", errors="backslashreplace")
    return "(nothing stored)"


class MessageDetailScreen(ConsoleScreen):
    """The timeline and content of one message, with the actions its state allows."""

    CSS_PATH = "message_detail.tcss"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,backspace", "back", "Back", id="detail.back"),
        Binding("r", "replay", "Replay", id="detail.replay"),
        Binding("r", "retry_now", "Retry now", id="detail.retry_now"),
        Binding("e", "edit", "Edit+replay", id="detail.edit"),
        Binding("h", "hold", "Hold", id="detail.hold"),
        Binding("h", "release", "Release", id="detail.release"),
        Binding("x,delete", "delete", "Delete", id="detail.delete"),
        Binding("o", "open_link", "Open linked", id="detail.open_link"),
        Binding(
            "right_square_bracket",
            "tab(1)",
            "Next tab",
            show=False,
            id="detail.next_tab",
        ),
        Binding(
            "left_square_bracket",
            "tab(-1)",
            "Prev tab",
            show=False,
            id="detail.prev_tab",
        ),
        Binding("ctrl+r", "reload", "Reload", show=False, id="detail.reload"),
    ]
    MUTATIONS: ClassVar[frozenset[str]] = frozenset(ALLOWED)

    def __init__(self, ctx: ConsoleContext, message_id: str, nav: str = "") -> None:
        super().__init__(ctx)
        self.message_id = message_id
        self.detail: MessageDetail | None = None
        self.nav_name = nav  # the list it was opened from stays marked

    def compose(self) -> ComposeResult:
        yield self.nav_bar()
        yield SafeText(Text("loading…", style="dim"), id="detail-head")
        with TabbedContent(id="detail-tabs"):
            for tab in TABS:
                with (
                    TabPane(
                        tab.capitalize() if tab != "html" else "HTML", id=f"tab-{tab}"
                    ),
                    VerticalScroll(),
                ):
                    if tab == "timeline":
                        yield AttemptTimeline(id="timeline")
                    else:
                        yield SafeText(id=f"content-{tab}")
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        self.load()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ALLOWED:
            if self.detail is None or self.ctx.read_only:
                return False
            return self.detail.summary.status in ALLOWED[action]
        if action == "open_link":
            return self.detail is not None and bool(self.link_target())
        return True

    @work(exclusive=True, group="detail-load", exit_on_error=False)
    async def load(self) -> None:
        detail = await self.ctx.ops.show(self.message_id)
        self.detail = detail
        now = self.now()
        self.query_one("#detail-head", SafeText).update(head_text(detail, now))
        self.query_one("#timeline", AttemptTimeline).show(detail, now)
        self.query_one("#content-raw", SafeText).show(raw_text(detail))
        self.refresh_bindings()
        await self.show_rendered(detail)

    async def show_rendered(self, detail: MessageDetail) -> None:
        """Headers, text and html as the message would be (or was) sent."""
        parts = [
            self.query_one(f"#content-{t}", SafeText)
            for t in ("headers", "text", "html")
        ]
        if detail.payload is None:
            for widget in parts:
                widget.show("(no valid job stored: see Raw)")
            return
        try:
            preview = await self.ctx.ops.rendered(detail.summary.id)
            reasons = list(preview.errors)
        except Exception as exc:  # the Raw tab still shows what is stored
            reasons = [error_text(exc)]
        if reasons:
            for widget in parts:
                widget.show(f"cannot render: {'; '.join(reasons)}")
            return
        head, text, html = parts
        head.update(headers_text(preview))
        text.show(preview.text if preview.text is not None else "(no text part)")
        html.show(preview.html if preview.html is not None else "(no html part)")

    def link_target(self) -> str | None:
        if self.detail is None:
            return None
        copies = self.detail.edited_into
        return copies[-1] if copies else self.detail.summary.edited_from

    # -- actions ----------------------------------------------------------------------
    def action_back(self) -> None:
        self.dismiss()

    def action_reload(self) -> None:
        self.load()

    def action_tab(self, step: int) -> None:
        tabs = self.query_one(TabbedContent)
        index = TABS.index((tabs.active or "tab-timeline").removeprefix("tab-"))
        tabs.active = f"tab-{TABS[(index + step) % len(TABS)]}"

    def action_open_link(self) -> None:
        if (target := self.link_target()) is not None:
            self.app.push_screen(MessageDetailScreen(self.ctx, target, self.nav_name))

    def action_replay(self) -> None:
        self.act("replay")

    def action_retry_now(self) -> None:
        self.act("retry_now")

    def action_hold(self) -> None:
        self.act("hold")

    def action_release(self) -> None:
        self.act("release")

    def action_delete(self) -> None:
        self.act("delete")

    def action_edit(self) -> None:
        if not self.refused():
            self.edit()

    @work(group="detail-action", exit_on_error=False)
    async def act(self, action: str) -> None:
        if self.refused():
            return
        if action == "delete":
            question = safe_join(
                [("Delete ", ""), (self.message_id, "bold"), ("?", "")]
            )
            if not await self.app.push_screen_wait(
                ConfirmModal("Delete message", question, "Delete")
            ):
                return
        method = getattr(self.ctx.ops, action)
        report = await method([self.message_id], reason="console")
        trouble = [*report.skipped, *report.failed]
        if trouble:
            self.notify(
                visible(f"{action}: not done ({trouble[0][1]})"),
                severity="warning",
                markup=False,
            )
        else:
            self.notify(visible(f"{action}: done ({self.message_id})"), markup=False)
        self.load()

    @work(group="detail-action", exit_on_error=False)
    async def edit(self) -> None:
        new_id = await self.app.push_screen_wait(EditModal(self.ctx, self.message_id))
        if new_id:
            self.notify(visible(f"edited copy {new_id} queued"), markup=False)
            self.load()
