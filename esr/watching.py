"""A run's live events as console lines, the same for a local run and a service's run.

Events are (type, data): `status` when the run moves on, `stats` about once a second,
`alert` once per episode, `done` at the end. The console shows every status change and
alert, and the figures every few seconds:

    00:02  citizens started: 2,000/s
    00:05  p95 latency: 680 ms
    00:08  ERROR spikes on /eligibility -> 14 %
"""

from __future__ import annotations

import sys
from typing import TextIO

from esr.alerts import clock

# How often the figures are shown between alerts.
FIGURES_EVERY_S = 5.0


def stats_of(live: dict) -> dict:
    """The figures a `stats` event carries, from a live.json reading."""
    requests = live.get("requests", 0)
    return {"phase": live.get("phase"), "elapsed_s": live.get("elapsed_s"),
            "citizens": live.get("citizens", 0), "rps": live.get("rps", 0.0),
            "p95_ms": live.get("p95_ms"), "requests": requests,
            "failures": live.get("failures", 0),
            "error_rate": round(live.get("failures", 0) / requests, 4) if requests else 0.0,
            "outcomes": live.get("outcomes") or {}}


class Console:
    """Prints the lines of one run's events to a stream."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stdout
        self.elapsed_s = 0.0
        self.figures_at: float | None = None

    def __call__(self, kind: str, data: dict) -> None:
        line = self.line(kind, data)
        if line:
            print(line, file=self.stream, flush=True)

    def line(self, kind: str, data: dict) -> str | None:
        if kind == "stats":
            self.elapsed_s = data.get("elapsed_s") or self.elapsed_s
            if self.figures_at is not None and self.elapsed_s - self.figures_at < FIGURES_EVERY_S:
                return None
            self.figures_at = self.elapsed_s
            p95 = data.get("p95_ms")
            return (f"{clock(self.elapsed_s or 0)}  [{data.get('phase')}] citizens "
                    f"{data.get('citizens', 0):,} | {data.get('rps', 0):,.0f} req/s | p95 "
                    f"{f'{p95:,.0f} ms' if p95 else '-'} | errors {data.get('error_rate', 0):.1%}")
        if kind == "alert":
            return f"{clock(data.get('at_s') or self.elapsed_s)}  {data.get('message', '')}"
        if kind == "status":
            reason = f" ({data['reason']})" if data.get("reason") else ""
            return f"{clock(self.elapsed_s or 0)}  {data.get('status')}{reason}"
        if kind == "done":
            verdict = data.get("verdict") or {}
            figures = (f": {verdict['requests']:,} requests, {verdict['failures']:,} failed, "
                       f"p95 {verdict['p95_ms']:,.0f} ms") if verdict else ""
            return f"{clock(self.elapsed_s or 0)}  run {data.get('status')}{figures}"
        return None
