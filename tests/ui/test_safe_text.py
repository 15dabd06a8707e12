"""The sanitiser: untrusted text is shown literally and never reaches the terminal raw."""

from __future__ import annotations

import pytest
from textual.app import App, ComposeResult

from mailconsole.widgets.safe_text import SafeText, safe_join, safe_text, visible

HOSTILE = "[bold red]x[/] \x1b]52;c;ZXZpbA==\x07 \x1b[2J \x9b31m [@click=app.quit]q[/]"


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain text", "plain text"),
        ("tab\tand\nnewline", "tab\tand\nnewline"),
        ("\x1b[2J", "\\x1b[2J"),
        ("\x1b]52;c;ZXZpbA==\x07", "\\x1b]52;c;ZXZpbA==\\x07"),
        ("csi\x9b31m", "csi\\x9b31m"),
        ("del\x7f", "del\\x7f"),
        ("nul\x00", "nul\\x00"),
        ("cr\rline", "cr\\x0dline"),
        ("bidi \u202egnp.exe", "bidi \\u202egnp.exe"),
        ("isolate \u2066x\u2069", "isolate \\u2066x\\u2069"),
        ("zero\u200bwidth", "zero\\u200bwidth"),
        ("line\u2028sep", "line\\u2028sep"),
        ("lone \udcff surrogate", "lone \\udcff surrogate"),
        ("tag \U000e0041", "tag \\U000e0041"),
        ("emoji 👩\u200d💻 ok", "emoji 👩\u200d💻 ok"),
        ("[bold]markup[/bold]", "[bold]markup[/bold]"),
    ],
)
def test_visible_spells_out_what_a_terminal_would_act_on(raw: str, shown: str) -> None:
    assert visible(raw) == shown


def test_single_line_spells_out_tab_and_newline() -> None:
    assert visible("a\tb\nc", single_line=True) == "a\\tb\\nc"


def test_none_and_empty_are_empty() -> None:
    assert visible(None) == ""
    assert safe_text(None).plain == ""


def test_safe_text_keeps_markup_as_characters_and_marks_escapes() -> None:
    text = safe_text(HOSTILE)
    assert text.plain.startswith("[bold red]x[/] \\x1b]52;c;ZXZpbA==\\x07")
    assert (
        "\x1b" not in text.plain
        and "\x9b" not in text.plain
        and "\x07" not in text.plain
    )
    marked = [text.plain[span.start : span.end] for span in text.spans]
    assert "\\x1b" in marked and "\\x07" in marked


def test_safe_text_cuts_to_a_length_with_an_ellipsis() -> None:
    assert safe_text("abcdefghij", single_line=True, max_length=5).plain == "abcd…"


def test_safe_join_styles_only_the_trusted_parts() -> None:
    text = safe_join([("label ", "bold"), ("[/bold]\x1b[2J", "")])
    assert text.plain == "label [/bold]\\x1b[2J"


class _Shows(App[None]):
    def __init__(self, value: str) -> None:
        super().__init__()
        self.value = value

    def compose(self) -> ComposeResult:
        yield SafeText(self.value, id="shown")


async def test_safe_text_widget_renders_hostile_text_inert() -> None:
    app = _Shows(HOSTILE)
    async with app.run_test(size=(100, 5)) as pilot:
        await pilot.pause()
        written = "".join(
            seg.text
            for strip in app.screen._compositor.render_strips()
            for seg in strip
        )
        assert "[bold red]x[/]" in written
        assert "[@click=app.quit]q[/]" in written
        assert not any(c in written for c in "\x1b\x07\x9b")
        widget = app.query_one("#shown", SafeText)
        widget.update("\x1b[31mred")  # a str through update() is sanitised too
        await pilot.pause()
        written = "".join(
            seg.text
            for strip in app.screen._compositor.render_strips()
            for seg in strip
        )
        assert "\\x1b[31mred" in written and "\x1b" not in written
        await pilot.click("#shown")  # [@click=...] must not act
        assert app.is_running
