"""Probes: what happened to citizens, aggregated in bounded memory and merged across workers.

Each Locust process has one `Probes`: the request event and the citizens feed
it, and `drain()` hands over (and forgets) everything gathered since the last
drain, as msgpack-safe data. The master, or the single process, folds drained
data into one `Tally`. Memory is bounded by endpoints x time buckets x cohorts,
never by the number of requests: latency goes into HDR histograms (within 1% of
exact percentiles; Locust rounds its own), one per endpoint and time bucket. What
the target names (routes, legal-block reasons, error texts) is kept in capped
counts (bounded.py): at most DISTINCT_VALUES_MAX values of each, the rest as "other".
Each kind of error kept also keeps the W3C trace id of one failing request of that kind
(bounded.Samples), for an engineer to open in the service's tracing.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TypedDict

import numpy as np
from hdrh.histogram import HdrHistogram

from esr.bounded import CappedCounts, Samples, clip
from esr.histograms import (
    HDR_RANGE,
    add_encoded,
    bucket_counts,
    merged,
    new_histogram,
    percentile_ms,
    record_values,
)
from esr.wire import HITL_HEADER, ROUTE_HEADER, VERDICT_HEADER

# 2: routes, legal blocks and errors as capped counts; 3: journeys started; 4: answers by
# status class, request-duration bucket counts and the process's CPU; 5: error traces;
# 6: requests that waited for a socket
WIRE_VERSION = 6
# A load process using more than this share of a core is the run's limit, not the target:
# its citizens queue for the CPU and their latency includes the wait (Locust warns at 90%).
BUSY_CPU_SHARE = 0.9


class Drained(TypedDict):
    """Probe data as `Probes.drain()` hands it over and `Tally.merge()` takes it: one per
    worker report (messages.DRAINED), msgpack-safe. The one statement of its shape."""

    v: int  # WIRE_VERSION: a master refuses data of another version
    bucket_s: float  # width of a latency time bucket, seconds
    latency: list[list]  # [endpoint, bucket index, *LATENCY_FIGURES], per endpoint and bucket
    errors: dict  # CappedCounts.wire() of (endpoint, failure text)
    error_traces: list[list]  # Samples.wire() of errors: [endpoint, failure text, trace id]
    routes: dict  # CappedCounts.wire() of X-ACT-Route values
    legal_blocks: dict  # CappedCounts.wire() of (reason, age band, veteran)
    hitl: dict  # {"paused": n, "skipped": n}
    journeys: list[list]  # [*JOURNEY_KEY, citizens]: journeys ended, by outcome
    started: int  # journeys begun (each by a new citizen)
    traits: list[list]  # [*TRAIT_KEY, citizens]
    arrivals: dict  # open model: scheduled, on_time, late, missed, late_ms_total, the counts
    # by lateness (LATE_MS_BOUNDS: late_ms_le_N, late_ms_over), and late_ms_max
    unaccounted: int  # requests cut off in flight by a forced stop
    queued: list  # [requests, total ms, longest ms] that waited for a free socket (connections.py)
    answers: list[list]  # [endpoint, method, status class, requests]
    durations: list[list]  # [endpoint, [requests in each duration bucket, the last +Inf]]
    load: list[float]  # [CPU seconds, wall seconds] the process used since the last drain


LATENCY_FIGURES = ("requests", "failures", "total_ms", "min_ms", "max_ms", "hdr")
JOURNEY_KEY = ("group", "age_band", "veteran", "outcome", "frustrated")
OTHER_ENDPOINTS = "(other)"  # the endpoints beyond live figures' limit, together
TRAIT_KEY = ("trait", "value", "outcome")
_REQUESTS_AT = 2 + LATENCY_FIGURES.index("requests")  # in a latency row


_REASON = re.compile(r"reason\s*=\s*([^;,\s]+)", re.IGNORECASE)


def requests_in(drained: Drained) -> int:
    """How many requests a drained batch holds."""
    return sum(row[_REQUESTS_AT] for row in drained["latency"])


@dataclass
class Latency:
    """Requests of one endpoint in one time bucket: exact counts and extremes, HDR percentiles.

    A request only notes its time; the figures take them in at `settle()`, all at once
    in numpy (drains come every few seconds, so memory stays bounded)."""

    requests: int = 0
    failures: int = 0
    total_ms: float = 0.0
    min_ms: float = float("inf")
    max_ms: float = 0.0
    histogram: HdrHistogram = field(default_factory=new_histogram)
    pending: list = field(default_factory=list)  # response times (ms) not yet settled

    def settle(self) -> None:
        if not self.pending:
            return
        values = np.array(self.pending, dtype=np.float64)
        self.pending = []
        self.requests += len(values)
        self.total_ms += float(values.sum())
        self.min_ms = min(self.min_ms, float(values.min()))
        self.max_ms = max(self.max_ms, float(values.max()))
        record_values(self.histogram, np.clip((values * 1000).astype(np.int64), 1, HDR_RANGE[1]))

    def merge(self, requests, failures, total_ms, min_ms, max_ms, encoded) -> None:
        self.requests += requests
        self.failures += failures
        self.total_ms += total_ms
        self.min_ms = min(self.min_ms, min_ms)
        self.max_ms = max(self.max_ms, max_ms)
        add_encoded(self.histogram, encoded)

    def row(self) -> list:
        self.settle()
        return [self.requests, self.failures, self.total_ms, self.min_ms, self.max_ms,
                self.histogram.encode()]


def response_facts(response, status: int) -> dict:
    """What the wire conventions say about one response: route, legal block, human review."""
    headers = getattr(response, "headers", None)
    facts = {}
    if headers is None:  # no response at all
        return facts
    # `in` before reading: geventhttpclient's get() raises and catches a KeyError for every
    # absent header, the costliest part of reading one on the hot path.
    route = headers[ROUTE_HEADER] if ROUTE_HEADER in headers else None  # noqa: SIM401
    if route:
        facts["route"] = route
    verdict = headers[VERDICT_HEADER] if VERDICT_HEADER in headers else ""  # noqa: SIM401
    if status == 451 or verdict.lower().startswith("blocked"):
        match = _REASON.search(verdict)
        facts["blocked"] = match.group(1) if match else "unspecified"
    if status == 202 and HITL_HEADER in headers:
        facts["paused"] = True
    return facts


# Arrival lateness is counted in these buckets (ms), enough for its percentiles to be read
# against the open model's goals (p99 under 20 ms).
LATE_MS_BOUNDS = (1, 2, 5, 10, 20, 50, 100)


def lateness_key(late_ms: float) -> str:
    bound = next((b for b in LATE_MS_BOUNDS if late_ms <= b), None)
    return f"late_ms_le_{bound}" if bound is not None else "late_ms_over"


STATUS_CLASSES = ("none", "1xx", "2xx", "3xx", "4xx", "5xx")


def status_class(status: int) -> str:
    """1xx … 5xx; `none` when no answer came (Locust's status 0) or it made no sense."""
    # On every request: a lookup, no string built.
    return STATUS_CLASSES[status // 100] if 100 <= status < 600 else "none"


class Probes:
    """One process's gatherings since the last drain."""

    def __init__(self, bucket_s: float, duration_bounds_ms: tuple[float, ...] = ()):
        self.bucket_s = bucket_s
        self.duration_bounds_ms = duration_bounds_ms  # histograms.duration_bounds_ms
        self._reset()

    def _reset(self) -> None:
        self.latency: dict[tuple[str, int], Latency] = {}
        self.errors = CappedCounts(value_index=1)  # (endpoint, kind)
        self.error_traces = Samples(self.errors)  # a failing request's W3C trace id, by kind
        self.routes = CappedCounts()  # (route,)
        self.legal_blocks = CappedCounts()  # (reason, age_band, veteran)
        self.hitl: Counter = Counter()  # paused, skipped
        self.journeys: Counter = Counter()  # (group, age_band, veteran, outcome, frustrated)
        self.started = 0  # journeys begun
        self.traits: Counter = Counter()  # (trait, value, outcome) for the traits a report names
        self.arrivals: Counter = Counter()  # see Drained.arrivals
        self.arrival_late_max_ms = 0.0
        self.unaccounted = 0  # requests cut off mid-flight: sent, but their fate unknown
        self.queued = [0, 0.0, 0.0]  # see Drained.queued
        self.answers: Counter = Counter()  # (endpoint, method, status class)
        self._cpu_since = (time.process_time(), time.monotonic())

    def request(self, name: str, start_time: float, response_time: float, failure: str | None,
                facts: dict, cohort: tuple[str, bool] | None, *, method: str = "",
                status: int = 0, trace_id: str | None = None) -> None:
        # Called for every request: kept to a few dictionary operations.
        key = (name, int(start_time // self.bucket_s))
        latency = self.latency.get(key)
        if latency is None:
            latency = self.latency[key] = Latency()
        latency.pending.append(response_time)
        self.answers[(name, method, status_class(status))] += 1
        if failure is not None:
            latency.failures += 1
            kind = (name, clip(failure))
            self.errors.add(kind)
            if trace_id is not None:
                self.error_traces.add(kind, trace_id)
        if not facts:
            return
        if "route" in facts:
            self.routes.add((clip(facts["route"]),))
        if "blocked" in facts and cohort:
            self.legal_blocks.add((clip(facts["blocked"]), *cohort))
        if facts.get("paused"):
            self.hitl["paused"] += 1

    def step_failed(self, name: str, reason: str) -> None:
        """A step that sent nothing (its templates failed): counted with its errors."""
        self.errors.add((name, clip(reason)))

    def journey(self, group: str, age_band: str, veteran: bool, outcome: str,
                frustrated: bool, traits: tuple = ()) -> None:
        self.journeys[(group, age_band, veteran, outcome, frustrated)] += 1
        for trait, value in traits:
            self.traits[(trait, value, outcome)] += 1

    def waited_for_socket(self, ms: float) -> None:
        """A request that waited `ms` for its process to have a file to spare (client-side
        queueing: not the target's latency, and not counted in it)."""
        self.queued[0] += 1
        self.queued[1] += ms
        self.queued[2] = max(self.queued[2], ms)

    def arrival(self, late_s: float) -> None:
        """An open-model arrival that started `late_s` after its scheduled time."""
        late_ms = max(late_s, 0.0) * 1000
        self.arrivals["late" if late_ms >= 1 else "on_time"] += 1
        self.arrivals["late_ms_total"] += int(late_ms)
        self.arrivals[lateness_key(late_ms)] += 1
        self.arrival_late_max_ms = max(self.arrival_late_max_ms, late_ms)

    def drain(self) -> Drained:
        """Everything since the last drain (see Drained); the probes start afresh."""
        durations = self._duration_counts()  # before the latency rows settle what is pending
        (cpu, wall), (cpu_then, wall_then) = (time.process_time(), time.monotonic()), \
            self._cpu_since
        data: Drained = {
            "v": WIRE_VERSION,
            "bucket_s": self.bucket_s,
            "latency": [[name, bucket, *lat.row()] for (name, bucket), lat in self.latency.items()],
            "errors": self.errors.wire(),
            "error_traces": self.error_traces.wire(),
            "routes": self.routes.wire(),
            "legal_blocks": self.legal_blocks.wire(),
            "hitl": dict(self.hitl),
            "journeys": [[*key, n] for key, n in self.journeys.items()],
            "started": self.started,
            "traits": [[*key, n] for key, n in self.traits.items()],
            "arrivals": {**self.arrivals, "late_ms_max": self.arrival_late_max_ms},
            "unaccounted": self.unaccounted,
            "queued": [self.queued[0], round(self.queued[1], 3), round(self.queued[2], 3)],
            "answers": [[*key, n] for key, n in self.answers.items()],
            "durations": [[name, counts.tolist()] for name, counts in durations.items()],
            "load": [round(cpu - cpu_then, 4), round(wall - wall_then, 4)],
        }
        self._reset()
        return data

    def _duration_counts(self) -> dict[str, np.ndarray]:
        counts: dict[str, np.ndarray] = {}
        for (name, _), latency in self.latency.items():
            if latency.pending:
                these = bucket_counts(np.array(latency.pending), self.duration_bounds_ms)
                counts[name] = counts[name] + these if name in counts else these
        return counts


class Tally:
    """The whole run so far: drained probe data from every process, merged."""

    def __init__(self):
        self.latency: dict[tuple[str, int], Latency] = {}
        self.errors = CappedCounts(value_index=1)
        self.error_traces = Samples(self.errors)
        self.routes = CappedCounts()
        self.legal_blocks = CappedCounts()
        self.hitl: Counter = Counter()
        self.journeys: Counter = Counter()
        self.started = 0
        self.traits: Counter = Counter()
        self.arrivals: Counter = Counter()
        self.arrival_late_max_ms = 0.0
        self.unaccounted = 0
        self.queued = [0, 0.0, 0.0]  # requests that waited for a socket, ms in all, longest ms
        self.bucket_s = 0.0
        self.reports = 0
        # Each endpoint over the whole run so far, kept as data comes in, so live figures
        # need not walk every time bucket.
        self.endpoints: dict[str, Latency] = {}
        self.answers: Counter = Counter()  # (endpoint, method, status class)
        self.durations: dict[str, np.ndarray] = {}  # requests per duration bucket
        self.load: dict[str, LoadProcess] = {}  # each load process's CPU, by its name

    def merge(self, data: Drained, process: str = "local") -> None:
        """Fold in one drain of `process` (a worker's id, or the single process)."""
        if data.get("v") != WIRE_VERSION:
            raise ValueError(f"probe data of wire version {data.get('v')!r}, "
                             f"expected {WIRE_VERSION}")
        self.reports += 1
        self.bucket_s = data["bucket_s"]
        for name, bucket, *row in data["latency"]:
            latency = self.latency.get((name, bucket))
            if latency is None:
                latency = self.latency[(name, bucket)] = Latency()
            latency.merge(*row)
            whole = self.endpoints.get(name)
            if whole is None:
                whole = self.endpoints[name] = Latency(histogram=new_histogram(word_size=8))
            whole.merge(*row)
        self.errors.merge(data["errors"])
        self.error_traces.merge(data["error_traces"])
        self.routes.merge(data["routes"])
        self.legal_blocks.merge(data["legal_blocks"])
        self.hitl.update(data["hitl"])
        for *key, n in data["journeys"]:
            self.journeys[tuple(key)] += n
        self.started += data["started"]
        for *key, n in data["traits"]:
            self.traits[tuple(key)] += n
        arrivals = dict(data["arrivals"])
        self.arrival_late_max_ms = max(self.arrival_late_max_ms, arrivals.pop("late_ms_max", 0))
        self.arrivals.update(arrivals)
        self.unaccounted += data["unaccounted"]
        requests, total_ms, longest_ms = data["queued"]
        self.queued = [self.queued[0] + requests, self.queued[1] + total_ms,
                       max(self.queued[2], longest_ms)]
        for *key, n in data["answers"]:
            self.answers[tuple(key)] += n
        for name, counts in data["durations"]:
            counts = np.array(counts, dtype=np.int64)
            self.durations[name] = self.durations[name] + counts if name in self.durations \
                else counts
        self.add_load(process, *data["load"], scheduled=arrivals.get("scheduled", 0))

    def add_load(self, process: str, cpu_s: float, wall_s: float, scheduled: int = 0) -> None:
        load = self.load.setdefault(process, LoadProcess())
        load.add(cpu_s, wall_s)
        load.arrivals_scheduled += scheduled

    # ---- live figures, for the progress line -------------------------------------------------

    @property
    def requests(self) -> int:
        return sum(whole.requests for whole in self.endpoints.values())

    @property
    def failures(self) -> int:
        return sum(whole.failures for whole in self.endpoints.values())

    def live(self, limit: int) -> dict:
        """The run so far for live figures (live.json): the `limit` busiest endpoints by name,
        the rest folded into OTHER_ENDPOINTS, so what readers make labels of stays bounded."""
        busiest = {name for name, _ in sorted(self.endpoints.items(),
                                              key=lambda item: -item[1].requests)[:limit]}

        def named(name: str) -> str:
            return name if name in busiest else OTHER_ENDPOINTS

        endpoints: dict[str, list[Latency]] = {}
        for name, whole in self.endpoints.items():
            endpoints.setdefault(named(name), []).append(whole)
        answers: Counter = Counter()
        for (name, method, status), n in self.answers.items():
            answers[(named(name), method, status)] += n
        durations: dict[str, np.ndarray] = {}
        for name, counts in self.durations.items():
            durations[named(name)] = durations.get(named(name), 0) + counts
        journeys: Counter = Counter()
        for (_, band, veteran, outcome, _), n in self.journeys.items():
            journeys[(band, veteran, outcome)] += n
        return {
            "overall": _figures(list(self.endpoints.values())),
            "endpoints": {name: _figures(parts) for name, parts in endpoints.items()},
            "answers": [[*key, n] for key, n in sorted(answers.items())],
            "durations": {name: counts.tolist() for name, counts in durations.items()},
            "journeys": [[*key, n] for key, n in sorted(journeys.items())],
            "arrivals": {key: self.arrivals[key] for key in ("on_time", "late", "missed")},
        }

    def breach(self, checks, since: float, until: float) -> str | None:
        """The first whole-run ceiling SLO broken by the requests of [since, until), worded."""
        chosen = [lat for (_, bucket), lat in self.latency.items()
                  if since <= bucket * self.bucket_s < until]
        requests = sum(lat.requests for lat in chosen)
        if not requests:
            return None
        histogram = merged(lat.histogram for lat in chosen)
        figures = {"error_rate": sum(lat.failures for lat in chosen) / requests,
                   "max_ms": max(lat.max_ms for lat in chosen),
                   "avg_ms": sum(lat.total_ms for lat in chosen) / requests,
                   **{f"p{q}_ms": percentile_ms(histogram, q) for q in (50, 90, 95, 99)}}
        for check in checks:
            actual = figures.get(check.metric)
            if check.endpoint is None and actual is not None and actual > check.threshold:
                return (f"{check.metric} {actual:.4g} above {check.threshold:g} over "
                        f"{until - since:g}s")
        return None

    def outcomes(self) -> Counter:
        totals: Counter = Counter()
        for (_, _, _, outcome, _), n in self.journeys.items():
            totals[outcome] += n
        return totals


@dataclass
class LoadProcess:
    """One load process's CPU over the run, from the intervals between its drains."""

    cpu_s: float = 0.0
    wall_s: float = 0.0
    busy_s: float = 0.0  # wall seconds of the intervals above BUSY_CPU_SHARE of a core
    peak: float = 0.0  # the highest share of a core over one interval
    arrivals_scheduled: int = 0  # open model: its share of the schedule, offered so far

    def add(self, cpu_s: float, wall_s: float) -> None:
        if wall_s <= 0:
            return
        share = cpu_s / wall_s
        self.cpu_s += cpu_s
        self.wall_s += wall_s
        self.busy_s += wall_s if share > BUSY_CPU_SHARE else 0.0
        self.peak = max(self.peak, share)

    def figures(self) -> dict:
        return {"cpu_s": round(self.cpu_s, 3), "wall_s": round(self.wall_s, 3),
                "busy_s": round(self.busy_s, 3), "peak_share": round(self.peak, 3),
                "arrivals_scheduled": self.arrivals_scheduled}


def _figures(parts: list[Latency]) -> dict:
    """Requests, failures and whole-run latency figures of some endpoints together."""
    requests = sum(p.requests for p in parts)
    histogram = parts[0].histogram if len(parts) == 1 else merged(p.histogram for p in parts)
    max_ms = max((p.max_ms for p in parts), default=0.0)
    total_ms = sum(p.total_ms for p in parts)
    return {"requests": requests, "failures": sum(p.failures for p in parts),
            "total_ms": round(total_ms, 3), "max_ms": round(max_ms, 3),
            "avg_ms": round(total_ms / requests, 3) if requests else 0.0,
            **{f"p{q}_ms": round(min(percentile_ms(histogram, q), max_ms), 3) if requests
               else 0.0 for q in (50, 90, 95, 99)}}


def bucket_width(duration_s: float) -> float:
    """Time buckets for latency: about 120 over the run, on a round number of seconds."""
    for width in (1, 2, 5, 10, 15, 30, 60, 120, 300):
        if duration_s / width <= 120:
            return float(width)
    return 600.0
