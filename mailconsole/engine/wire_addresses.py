"""Mailbox addresses and header values from a job: ``Address``, strict address syntax
and the header-injection check, plus ``WireError``, the one error the wire parser raises.

Split out of ``wire`` (which re-exports the public names: import them from there). The
checks are pure: no I/O, no logging, and nothing about the store, the broker, SMTP or
the JSON Schema. They must refuse rather than repair: an address or a header value is
returned as given (only the domain is normalised) or refused with a ``WireError`` whose
text is one line naming the field, user data appearing only through ``repr``, truncated.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
import unicodedata
from dataclasses import dataclass

_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_CONTROL_BYTE = re.compile(b"[\x00-\x08\x0a-\x1f\x7f]")
_ENCODED_WORD = re.compile(r"=\?([^?]*)\?([A-Za-z])\?([^?]*)\?=")
_Q_ESCAPE = re.compile(rb"=([0-9A-Fa-f]{2})")
_ATEXT = "A-Za-z0-9!#$%&'*+/=?^_`{|}~-"
_DOT_ATOM = re.compile(  # atext plus any non-ASCII character (RFC 6531)
    rf"[\u0080-\U0010ffff{_ATEXT}]+(?:\.[\u0080-\U0010ffff{_ATEXT}]+)*"
)
_QUOTED_LOCAL = re.compile(r'"(?:[!#-\[\]-~]|\\[!-~])+"')
_LDH_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_CHAR_NAMES = {"\r": "a carriage return (CR)", "\n": "a line feed (LF)", "\0": "a NUL"}


class WireError(ValueError):
    """Input that can never be sent; ``str(err)`` is one line naming the field."""


@dataclass(frozen=True, slots=True)
class Address:
    """One mailbox. ``email`` is ``local@domain`` with the domain lower-cased (IDN kept
    as Unicode); ``name`` is the display name, "" when there is none."""

    email: str
    name: str = ""

    @property
    def needs_smtputf8(self) -> bool:
        """True when the local part is not ASCII: only an SMTPUTF8 relay takes it."""
        return not self.email.rpartition("@")[0].isascii()

    def formatted(self) -> str:
        """``Name <local@domain>`` for display only (never written into a message)."""
        if not self.name:
            return self.email
        name = self.name
        if re.search(r'[()<>@,;:\\".\[\]]', name):
            name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return f"{name} <{self.email}>"


def parse_address(value: object, *, field: str) -> Address:
    """Parse ``"Name <a@b>"``, ``"a@b"`` or ``{"name", "email"}``; ``field`` names it.

    Raises:
        WireError: if the value is not exactly one valid address.
    """
    if isinstance(value, dict):
        email = parse_email(value.get("email"), field=f"{field}.email")
        return Address(email, _clean_name(value.get("name"), f"{field}.name"))
    if not isinstance(value, str):
        raise WireError(f"{field}: expected an address, got {_json_type(value)}")
    check_header_value(field, value)
    text = value.strip()
    if not text.endswith(">"):
        return Address(parse_email(text, field=field))
    lt = text.rfind("<")
    if lt < 0:
        raise WireError(
            f"{field}: {_show(value)} is not a valid address ('>' without '<')"
        )
    raw_name = text[:lt].strip()
    if raw_name.startswith('"'):
        if len(raw_name) < 2 or not re.fullmatch(r'"(?:[^"\\]|\\.)*"', raw_name):
            raise WireError(f"{field}: badly quoted display name in {_show(value)}")
        raw_name = re.sub(r"\\(.)", r"\1", raw_name[1:-1])
    elif re.search(r'[<>",]', raw_name):
        raise WireError(
            f"{field}: {_show(value)} is not one address (quote a display name that"
            " contains '<', '>', '\"' or ',', and use a list for several recipients)"
        )
    return Address(parse_email(text[lt + 1 : -1], field=field), raw_name.strip())


def parse_email(value: object, *, field: str) -> str:
    """Check a bare ``local@domain`` strictly; return it with the domain normalised.

    Raises:
        WireError: naming ``field`` when the address is not valid.
    """
    if not isinstance(value, str):
        raise WireError(f"{field}: expected an address, got {_json_type(value)}")
    problem = _email_problem(value)
    if problem:
        raise WireError(f"{field}: {_show(value)} is not a valid address ({problem})")
    check_header_value(field, value)
    local, _, domain = value.rpartition("@")
    return f"{local}@{_normalise_domain(domain)}"


def check_header_value(name: str, value: str) -> None:
    """Refuse header text that could break out of its header line.

    CR, LF, NUL, other C0 and C1 controls, DEL, U+2028/U+2029 and lone surrogates are
    refused (tab is allowed), also after decoding RFC 2047 encoded words such as
    ``=?UTF-8?Q?=0A?=`` (decoded here by hand, repeatedly, as leniently as the stdlib).

    Raises:
        WireError: naming ``name`` and the offending character.
    """
    if not isinstance(value, str):
        raise WireError(f"{name}: expected a string, got {_json_type(value)}")
    _refuse_controls(name, value, "")
    text = value
    for _ in range(4):
        if "=?" not in text:
            return
        decoded = _ENCODED_WORD.sub(lambda m: _decode_word(name, m), text)
        if decoded == text:
            return
        _refuse_controls(name, decoded, " after decoding RFC 2047 encoded words")
        text = decoded


def _clean_name(value: object, field: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise WireError(f"{field}: expected a string, got {_json_type(value)}")
    check_header_value(field, value)
    return value.strip()


# -- addresses ---------------------------------------------------------------------


def _email_problem(value: str) -> str:
    """Why ``value`` is not a strict ``local@domain`` address; "" when it is one."""
    if not value or len(value) > 254:
        return "empty" if not value else "longer than 254 characters"
    if not value.isprintable() or re.search(r"[\s<>,]", value):
        return "contains whitespace, control characters, '<', '>' or ','"
    if value.count("@") != 1:
        return "needs exactly one '@'"
    local, _, domain = value.partition("@")
    if not local or len(local.encode("utf-8")) > 64:
        return "empty local part" if not local else "local part over 64 octets"
    if local.startswith('"'):
        if not _QUOTED_LOCAL.fullmatch(local):
            return "badly quoted local part"
    elif not _DOT_ATOM.fullmatch(local):
        return "local part is not a dot-atom"
    if not domain:
        return "empty domain"
    try:
        _normalise_domain(domain)
    except ValueError as exc:
        return str(exc)
    return ""


@functools.lru_cache(maxsize=4096)
def _normalise_domain(domain: str) -> str:
    """Lower-case, NFC; check LDH labels (IDN via the stdlib ``idna`` codec, IDNA 2003).

    Raises ValueError with the reason. Domains whose IDNA 2003 mapping is not the
    identity (``faß.de`` would become ``fass.de``) are refused rather than misdelivered.
    """
    name = unicodedata.normalize("NFC", domain.lower())
    labels = [_ascii_label(label) for label in name.split(".")]
    ascii_name = ".".join(labels)
    if len(ascii_name) > 253 or not all(_LDH_LABEL.fullmatch(x) for x in labels):
        raise ValueError(
            "domain is not letters, digits and hyphens in dot-separated labels"
        )
    if labels[-1].isdigit():
        raise ValueError("IP addresses are not supported")
    return name


def _ascii_label(label: str) -> str:
    if label.isascii():
        return label
    try:
        encoded = label.encode("idna")
        if encoded.decode("idna") != label:
            raise ValueError("domain changes under IDNA mapping; send it in xn-- form")
    except UnicodeError:
        raise ValueError("not a valid internationalised domain") from None
    return encoded.decode("ascii")


# -- header injection --------------------------------------------------------------


def _refuse_controls(name: str, value: str, how: str) -> None:
    found = _CONTROL.search(value)
    if found:
        char = found.group()
        what = _CHAR_NAMES.get(char, f"control character U+{ord(char):04X}")
        raise WireError(f"{name}: contains {what}{how}")


def _decode_word(name: str, match: re.Match[str]) -> str:
    """Decode one encoded word like the stdlib would; refuse control bytes in it."""
    charset, cte, payload = match.group(1), match.group(2).lower(), match.group(3)
    data = payload.encode("ascii", "replace")
    if cte == "q":
        candidates = [
            _Q_ESCAPE.sub(lambda m: bytes([int(m[1], 16)]), data.replace(b"_", b" "))
        ]
    elif cte == "b":
        candidates = _b64_candidates(data)
    else:
        return match.group(0)
    if any(_CONTROL_BYTE.search(c) for c in candidates):
        raise WireError(
            f"{name}: contains a control character in an RFC 2047 encoded word"
        )
    try:
        return candidates[0].decode(charset.partition("*")[0], "replace")
    except (LookupError, UnicodeError, ValueError, TypeError):
        return candidates[0].decode("latin-1")


def _b64_candidates(data: bytes) -> list[bytes]:
    """Every decoding the stdlib's lenient ``decode_b`` might settle on."""
    pad = b"==="[: 4 - len(data) % 4] if len(data) % 4 else b""
    out: list[bytes] = []
    for candidate, strict in ((data + pad, True), (data, False), (data + b"==", False)):
        try:
            out.append(base64.b64decode(candidate, validate=strict))
        except binascii.Error:
            continue
    return out or [data]


# -- small helpers shared by the wire modules --------------------------------------


def _show(value: object, limit: int = 80) -> str:
    """``repr`` (controls and surrogates escaped), cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_type(value: object) -> str:
    names = {bool: "boolean", int: "integer", float: "number", str: "string"}
    names |= {list: "array", dict: "object", type(None): "null"}
    return names.get(type(value), type(value).__name__)
