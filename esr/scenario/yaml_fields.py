"""Typed reads from a YAML document that record a problem instead of raising.

Each reader returns the value, or INVALID after recording exactly one problem at
the value's key path; callers carry on so that one pass finds every problem.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable

from esr.scenario.yaml_source import Document, KeyPath
from esr.units import UnitError, parse_duration, parse_rate, parse_span


class _Invalid:
    def __repr__(self) -> str:
        return "INVALID"

    def __bool__(self) -> bool:
        return False


INVALID = _Invalid()

FLOW_HINT = ("in a YAML flow mapping put a space after each colon, "
             "e.g. {template: seniors, count: 3000}")


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(word), sorted(choices), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else ""


def looks_like_flow_typo(text: object) -> bool:
    """'template:seniors' is what YAML makes of a flow mapping missing its spaces."""
    if not isinstance(text, str) or ":" not in text or text.startswith(("http:", "https:")):
        return False
    key, _, rest = text.partition(":")
    return bool(key.strip()) and bool(rest) and not rest.startswith(" ")


def mapping(doc: Document, path: KeyPath, value: object, what: str) -> dict | _Invalid:
    if isinstance(value, dict):
        return value
    hint = FLOW_HINT if looks_like_flow_typo(value) else ""
    doc.problem(path, f"expected {what} (a mapping of keys), got {describe(value)}", hint)
    return INVALID


def check_keys(doc: Document, path: KeyPath, data: dict, allowed: Iterable[str],
               required: Iterable[str] = ()) -> None:
    """Report unknown keys (with a suggestion) and missing required ones."""
    allowed = list(allowed)
    flow_typos = False
    for key, value in data.items():
        if key in allowed:
            continue
        flow_typos |= looks_like_flow_typo(key) and value is None
        hint = FLOW_HINT if looks_like_flow_typo(key) and value is None else (
            did_you_mean(key, allowed) or f"allowed keys: {', '.join(allowed)}")
        doc.problem((*path, key), f"unknown key '{key}'", hint, at_key=True)
    if flow_typos:
        return  # the keys are there, only misspelt; "missing" would say the same thing twice
    for key in required:
        if key not in data:
            doc.problem(path, f"missing required key '{key}'")


def describe(value: object) -> str:
    """How a wrong value reads in a message: its YAML type and a short rendering."""
    names = {bool: "a boolean", int: "a number", float: "a number", str: "text",
             list: "a list", dict: "a mapping", type(None): "nothing (null)"}
    kind = names.get(type(value), type(value).__name__)
    if isinstance(value, (dict, list)) or value is None:
        return kind
    text = repr(value) if isinstance(value, str) else str(value)
    return f"{kind} {text[:40]}"


# Beyond any count or duration a scenario means; also keeps huge YAML integers (10^400) from
# the float conversions and the digit limit of str() further on.
LARGEST_WHOLE_NUMBER = 10**15


def number(doc: Document, path: KeyPath, value: object, *, integer: bool = False,
           minimum: float | None = None, maximum: float | None = None,
           above: float | None = None) -> float | int | _Invalid:
    kinds = (int,) if integer else (int, float)
    what = "a whole number" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, kinds):
        if integer and isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            doc.problem(path, f"expected {what}, got {describe(value)}")
            return INVALID
    if isinstance(value, int) and abs(value) > LARGEST_WHOLE_NUMBER:
        doc.problem(path, f"expected {what} of at most {LARGEST_WHOLE_NUMBER:,}, got a larger "
                    "one")
        return INVALID
    if isinstance(value, float) and not math.isfinite(value):
        doc.problem(path, f"expected a finite number, got {value}")
        return INVALID
    if minimum is not None and value < minimum:
        doc.problem(path, f"must be at least {minimum:g}, got {value}")
        return INVALID
    if above is not None and value <= above:
        doc.problem(path, f"must be greater than {above:g}, got {value}")
        return INVALID
    if maximum is not None and value > maximum:
        doc.problem(path, f"must be at most {maximum:g}, got {value}")
        return INVALID
    return value


def boolean(doc: Document, path: KeyPath, value: object) -> bool | _Invalid:
    if isinstance(value, bool):
        return value
    doc.problem(path, f"expected true or false, got {describe(value)}")
    return INVALID


def text(doc: Document, path: KeyPath, value: object, *, nonempty: bool = True) -> str | _Invalid:
    if isinstance(value, str) and (value.strip() or not nonempty):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    doc.problem(path, f"expected text, got {describe(value)}")
    return INVALID


def choice(doc: Document, path: KeyPath, value: object, choices: Iterable[str],
           what: str = "value") -> str | _Invalid:
    choices = list(choices)
    if isinstance(value, str) and value in choices:
        return value
    hint = did_you_mean(value, choices) if isinstance(value, str) else ""
    shown = f"'{value}'" if isinstance(value, str) else describe(value)
    doc.problem(path, f"unknown {what} {shown}; expected one of {', '.join(choices)}", hint)
    return INVALID


def _unit(parse: Callable[[object], object]):
    def read(doc: Document, path: KeyPath, value: object):
        try:
            return parse(value)
        except UnitError as error:
            doc.problem(path, str(error))
            return INVALID
    return read


duration = _unit(parse_duration)
rate = _unit(parse_rate)
span = _unit(parse_span)


def items(doc: Document, path: KeyPath, value: object, what: str) -> list[tuple[KeyPath, object]]:
    """A list's items with their paths; one item written without the list around it counts."""
    if isinstance(value, list):
        return [((*path, i), item) for i, item in enumerate(value)]
    if value is None:
        doc.problem(path, f"expected {what}, got nothing")
        return []
    return [(path, value)]
