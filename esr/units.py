"""Durations, rates and ranges as scenario authors write them: 500ms, 1h30m, 1000/min, 2s..10s."""

from __future__ import annotations

import re
from dataclasses import dataclass

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PER = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0,
        "h": 3600.0, "hour": 3600.0}
# Whole-value patterns, shared with the JSON Schema.
DURATION_PATTERN = r"^\s*(\d+(\.\d+)?(ms|h|m|s)\s*)+$"
RATE_PATTERN = rf"^\s*(\d+(?:\.\d+)?)\s*/\s*({'|'.join(_PER)})\s*$"
_RATE = re.compile(RATE_PATTERN)

DURATION_EXAMPLES = "500ms, 90s, 5m or 1h30m"
MAX_RATE_PER_S = 1_000_000
MAX_DURATION_S = 30 * 24 * 3600  # a month: longer is a typo, and breaks arithmetic at infinity
RATE_EXAMPLES = "20/s or 1000/min"


class UnitError(ValueError):
    """A value that is not a duration, rate or range; the message says what is expected."""


def parse_duration(value: object) -> float:
    """Seconds in a duration such as '1h30m'; a bare 0 is allowed, other bare numbers are not."""
    if value == 0 and not isinstance(value, bool):
        return 0.0
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        raise UnitError(f"{value} has no unit: write a duration such as {value}s or {value}m")
    if not isinstance(value, str):
        raise UnitError(f"expected a duration such as {DURATION_EXAMPLES}")
    text = value.strip().replace(" ", "")
    parts = list(_DURATION_PART.finditer(text))
    if not text or "".join(p.group(0) for p in parts) != text:
        raise UnitError(f"'{value}' is not a duration: expected one such as {DURATION_EXAMPLES}")
    seconds = sum(float(p.group(1)) * _SECONDS[p.group(2)] for p in parts)
    if not seconds <= MAX_DURATION_S:
        raise UnitError(f"'{value[:40]}' is longer than ESR runs (at most 30 days)")
    return seconds


def parse_rate(value: object) -> float:
    """Arrivals per second in a rate such as '1000/min'."""
    match = _RATE.match(value) if isinstance(value, str) else None
    if not match:
        raise UnitError(f"expected a rate such as {RATE_EXAMPLES}")
    rate = float(match.group(1)) / _PER[match.group(2)]
    if not rate <= MAX_RATE_PER_S:
        raise UnitError(f"'{value[:40]}' is more than ESR can send ({MAX_RATE_PER_S:,}/s at most)")
    return rate


@dataclass(frozen=True)
class Span:
    """A duration drawn uniformly between low and high seconds (equal for a fixed one)."""

    low: float
    high: float

    def __str__(self) -> str:
        return format_duration(self.low) if self.low == self.high else (
            f"{format_duration(self.low)}..{format_duration(self.high)}")


def parse_span(value: object) -> Span:
    """A duration ('5s') or a range of durations ('2s..10s')."""
    if isinstance(value, str) and ".." in value:
        low_text, _, high_text = value.partition("..")
        low, high = parse_duration(low_text), parse_duration(high_text)
        if low > high:
            raise UnitError(f"the range '{value}' runs backwards: write the shorter duration first")
        return Span(low, high)
    seconds = parse_duration(value)
    return Span(seconds, seconds)


def format_duration(seconds: float) -> str:
    """The shortest spelling the parser reads back: 90 -> '1m30s', 0.5 -> '500ms'."""
    if seconds < 1 and seconds != 0:
        return f"{round(seconds * 1000)}ms"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "")
    fraction = seconds - whole
    if secs or fraction or not text:
        text += f"{secs + fraction:g}s"
    return text
