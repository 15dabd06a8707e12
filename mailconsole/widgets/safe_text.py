"""The one place untrusted text is made inert for display.

Subjects, addresses, SMTP replies, bodies and headers come from producers and remote
servers. Textual 8.2 writes escape sequences in widget content to the terminal
unchanged (an OSC 52 clipboard write, a clear screen, an 8-bit CSI), even with markup
off, and with markup on ``[/bold]`` raises and ``[@click=app.quit]`` acts. So every
untrusted string reaches the screen through this module:

* :func:`visible` turns a string into plain text in which every control character
  (C0 but tab/newline, DEL, C1), escape, bidi override/isolate, invisible format
  character, line/paragraph separator and lone surrogate is spelled out (``\\x1b``,
  ``\\u202e``): an ESC sequence becomes harmless printable characters.
* :func:`safe_text` returns a :class:`rich.text.Text` (never parsed as markup) with
  the spelled-out characters styled so an operator sees where they were.
* :class:`SafeText` is a ``Static`` with markup off that only accepts text through
  :func:`safe_text`.

This module must not interpret markup or pass a raw control character through.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache

from rich.text import Text
from textual.widgets import Static

ESCAPE_STYLE = "reverse"
"""How a spelled-out character is shown (reverse video works with NO_COLOR too)."""

_ALLOWED_CONTROLS = frozenset("\t\n")
_ALLOWED_FORMAT = frozenset("\u200c\u200d")
"""Zero-width (non-)joiners: needed by several scripts and emoji; harmless."""
_BIDI = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)


@lru_cache(maxsize=512)
def _spelling(char: str) -> str | None:
    """How ``char`` is shown, or ``None`` when it may be shown as itself."""
    if char in _ALLOWED_CONTROLS or char in _ALLOWED_FORMAT:
        return None
    code = ord(char)
    category = unicodedata.category(char)
    if char in _BIDI or category in ("Cc", "Cf", "Cs", "Zl", "Zp") or code == 0x7F:
        if code <= 0xFF:
            return f"\\x{code:02x}"
        if code <= 0xFFFF:
            return f"\\u{code:04x}"
        return f"\\U{code:08x}"
    return None


def _is_plain(text: str) -> bool:
    """Fast path: printable ASCII plus tab/newline needs no work."""
    return text.isascii() and all(" " <= c < "\x7f" or c in "\t\n" for c in text)


def _pieces(text: str, single_line: bool) -> list[tuple[str, bool]]:
    """Split ``text`` into (chunk, is_spelled_out) pieces."""
    out: list[tuple[str, bool]] = []
    plain: list[str] = []
    for char in text:
        spelled = _spelling(char)
        if spelled is None and single_line and char in "\t\n":
            spelled = "\\t" if char == "\t" else "\\n"
        if spelled is None:
            plain.append(char)
            continue
        if plain:
            out.append(("".join(plain), False))
            plain = []
        out.append((spelled, True))
    if plain:
        out.append(("".join(plain), False))
    return out


def visible(text: str | None, *, single_line: bool = False) -> str:
    """``text`` with every dangerous or invisible character spelled out.

    Args:
        text: untrusted text; ``None`` gives ``""``.
        single_line: also spell out tab and newline (table cells, titles).

    Returns:
        A string safe to print to a terminal as plain text (still not as markup).
    """
    if not text:
        return ""
    if _is_plain(text) and not (single_line and ("\n" in text or "\t" in text)):
        return text
    return "".join(chunk for chunk, _ in _pieces(text, single_line))


def safe_text(
    text: str | None,
    *,
    single_line: bool = False,
    style: str = "",
    max_length: int | None = None,
) -> Text:
    """A rich ``Text`` showing ``text`` literally, with spelled-out characters marked.

    Args:
        text: untrusted text; ``None`` gives an empty ``Text``.
        single_line: spell out tab and newline too, and never wrap.
        style: a style for the whole text (a trusted constant, not data).
        max_length: cut (with an ellipsis) to at most this many characters.
    """
    result = Text(style=style, no_wrap=single_line, end="")
    if single_line:
        result.overflow = "ellipsis"
    if not text:
        return result
    if _is_plain(text) and not (single_line and ("\n" in text or "\t" in text)):
        result.append(text)
    else:
        for chunk, spelled in _pieces(text, single_line):
            result.append(chunk, style=ESCAPE_STYLE if spelled else None)
    if max_length is not None and len(result) > max_length:
        result.truncate(max_length, overflow="ellipsis")
    return result


def safe_join(parts: list[tuple[str | None, str]], *, single_line: bool = True) -> Text:
    """Untrusted parts with trusted styles, joined into one ``Text``.

    Args:
        parts: ``(untrusted text, trusted style)`` pairs.
        single_line: as for :func:`safe_text`.
    """
    result = Text(
        no_wrap=single_line, overflow="ellipsis" if single_line else None, end=""
    )
    for value, style in parts:
        result.append_text(safe_text(value, single_line=single_line, style=style))
    return result


class SafeText(Static):
    """A ``Static`` for untrusted text: markup off, escapes spelled out.

    Use :meth:`show` (or :meth:`update` with a ``str``): a plain string is always
    sanitised, a ``Text`` is assumed to come from :func:`safe_text` already.
    """

    DEFAULT_CSS = """
    SafeText { height: auto; }
    SafeText.-single-line { text-wrap: nowrap; text-overflow: ellipsis; }
    """

    def __init__(
        self,
        text: str | Text = "",
        *,
        single_line: bool = False,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        self._single_line = single_line
        super().__init__(
            self._inert(text), markup=False, name=name, id=id, classes=classes
        )
        self.set_class(single_line, "-single-line")

    def _inert(self, text: object) -> Text:
        if isinstance(text, Text):
            return text
        return safe_text(str(text), single_line=self._single_line)

    def show(self, text: str | None) -> None:
        """Display untrusted ``text`` literally."""
        super().update(self._inert(text or ""))

    def update(self, content: object = "", *, layout: bool = True) -> None:
        super().update(self._inert(content), layout=layout)
