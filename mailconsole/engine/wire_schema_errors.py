"""Why a payload failed the wire JSON Schema, as one line: jsonschema's
``ValidationError`` turned into a reason such as ``to[1]: required field is missing``.

Split out of ``wire``, whose ``parse_job`` picks the error with ``_relevance`` and raises
``WireError(_schema_reason(error))``; ``_path`` also names fields in ``wire``'s own
reasons. It must not validate anything itself, do I/O or
log, and must not put user data in a reason except through ``_show`` (``repr``,
truncated); the texts are stored and shown to operators, so changing one is a change
to what operators see.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

# jsonschema ships no type information and types-jsonschema is not a dependency.
from jsonschema.exceptions import (  # type: ignore[import-untyped]
    ValidationError,
    relevance,
)

from mailconsole.engine.wire_addresses import _json_type, _show

_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _schema_reason(error: ValidationError) -> str:
    path = list(error.absolute_path)
    if error.validator == "required":
        missing = next(
            (k for k in error.validator_value if k not in error.instance), "?"
        )
        return f"{_path([*path, missing])}: required field is missing"
    problem = _PROBLEMS.get(str(error.validator), _generic_problem)(error)
    return f"{_path(path)}: {problem}" if path else problem


def _relevance(error: ValidationError) -> Any:
    """jsonschema's relevance, except that a "one of these fields is required" rule
    yields to any other error and is reported as itself, not as one of its branches."""
    if _required_groups(error) or (error.parent and _required_groups(error.parent)):
        return ()  # sorts below every relevance tuple
    return relevance(error)


def _required_groups(error: ValidationError) -> bool:
    branches = error.validator_value
    return error.validator == "anyOf" and all(
        isinstance(b, dict) and b.get("required") for b in branches
    )


def _generic_problem(error: ValidationError) -> str:
    if error.validator in ("anyOf", "oneOf"):
        if _required_groups(error):
            names = [repr(b["required"][0]) for b in error.validator_value]
            return f"one of {', '.join(names[:-1])} or {names[-1]} is required"
        return _expected(error, "")
    description = _description(error)
    if error.validator in ("pattern", "not") and description:
        return f"{_show(error.instance)} is not {description}"
    return _show(error.message, 200).strip("'\"")


def _expected(error: ValidationError, fallback: str) -> str:
    wanted = _description(error) or fallback or "a valid value"
    return f"expected {wanted}, got {_json_type(error.instance)}"


def _description(error: ValidationError) -> str:
    schema = error.schema
    return str(schema.get("description", "")) if isinstance(schema, dict) else ""


def _unknown_field(error: ValidationError) -> str:
    known = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
    extra = [k for k in error.instance if k not in known]
    return f"unknown field {_show(extra[0] if extra else '?')}"


_PROBLEMS: dict[str, Callable[[ValidationError], str]] = {
    "type": lambda e: _expected(e, _types(e.validator_value)),
    "additionalProperties": _unknown_field,
    "minLength": lambda e: (
        "must not be empty"
        if e.validator_value == 1
        else f"must be at least {e.validator_value} characters long"
    ),
    "maxLength": lambda e: (
        f"is {len(e.instance)} characters long, over the limit of {e.validator_value}"
    ),
    "minItems": lambda e: "must not be empty",
    "maxItems": lambda e: (
        f"has {len(e.instance)} items, over the limit of {e.validator_value}"
    ),
    "maxProperties": lambda e: (
        f"has {len(e.instance)} entries, over the limit of {e.validator_value}"
    ),
    "minimum": lambda e: f"{e.instance} is below the minimum of {e.validator_value}",
    "maximum": lambda e: f"{e.instance} is over the maximum of {e.validator_value}",
}


# -- small helpers -----------------------------------------------------------------


def _path(parts: Iterable[str | int]) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f"[{_show(part)}]"
    return out


def _types(expected: object) -> str:
    return " or ".join(expected) if isinstance(expected, list) else str(expected)
