"""The scenario, frozen: what a YAML file means once `reader` has checked every part of it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from esr.population.demographics import Behavior, Traits
from esr.units import Span

LANGUAGE_VERSION = 1
# Default age bands: HUD counts 62 and over as elderly.
AGE_BANDS = ((18, 29, "18-29"), (30, 44, "30-44"), (45, 61, "45-61"), (62, 200, "62+"))


# ---- the model -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CitizenGroup:
    name: str  # unique within the scenario; prefixes each citizen_id
    template: str  # the template's name as written
    count: int  # peak concurrent citizens (closed model) or share of arrivals (open model)
    traits: Traits  # the template's distributions with the group's overrides
    behavior: Behavior
    description: str = ""


@dataclass(frozen=True)
class Stage:
    duration: float
    citizens: int
    spawn_rate: float | None  # None: reach the stage's citizens over its first tenth


@dataclass(frozen=True)
class Spike:
    at: float
    size: int
    duration: float


@dataclass(frozen=True)
class LoadProfile:
    ramp_up: float = 0.0
    sustain: float = 0.0
    ramp_down: float = 0.0
    spike: Spike | None = None
    stages: tuple[Stage, ...] = ()
    arrival_rate: float | None = None  # citizens per second, open model
    arrival_spacing: str = "uniform"  # open model: "uniform" (evenly spaced) or "poisson"
    max_citizens: int | None = None  # open model: the pool's cap over all processes

    @property
    def duration(self) -> float:
        if self.stages:
            return sum(stage.duration for stage in self.stages)
        return self.ramp_up + self.sustain + self.ramp_down


@dataclass(frozen=True)
class Step:
    name: str
    method: str
    path: str
    json: object = None  # Jinja2 templates inside strings, rendered per citizen
    form: dict | None = None
    body: str | None = None
    headers: dict | None = None
    expect: tuple[int, ...] = ()  # empty: any status below 400, plus 202 and 451 by convention
    extract: dict | None = None  # variable -> json.a.b | header.X-Name | status
    think_time: Span | None = None  # None: the citizen's own think time


@dataclass(frozen=True)
class ChaosAction:
    action: str
    target: str
    after: float
    duration: float | None = None
    options: dict | None = None  # the action's own keys (method, headers, signal, …)
    # Where it stands in the file, so a refusal to run it can say (see permissions.py).
    line: int = field(default=0, compare=False)
    column: int = field(default=0, compare=False)
    path: str = field(default="", compare=False)


@dataclass(frozen=True)
class SloCheck:
    metric: str
    threshold: float
    endpoint: str | None = None

    @property
    def name(self) -> str:
        return f"{self.endpoint} {self.metric}" if self.endpoint else self.metric


@dataclass(frozen=True)
class Slo:
    checks: tuple[SloCheck, ...] = ()
    window: float | None = None  # each check also holds over every sliding window this long
    abort_on_fail: bool = False  # stop the run when a check fails over a whole window


@dataclass(frozen=True)
class Scenario:
    name: str
    file: str
    sha256: str
    target: str
    seed: int
    reference_date: dt.date
    citizens: tuple[CitizenGroup, ...]
    load_profile: LoadProfile
    journey: tuple[Step, ...] | None
    probes: tuple[str, ...]
    network_jitter_ms: int
    chaos: tuple[ChaosAction, ...]
    track_legal_blocks: bool
    hitl_skip: bool
    slo: Slo
    report_formats: tuple[str, ...]
    description: str = ""
    report_title: str | None = None
    report_traits: tuple[str, ...] = ()  # outcomes are also broken down by these traits
    trace_context: bool = True  # W3C traceparent and baggage on every request (esr/wire.py)
    language_version: int = LANGUAGE_VERSION
    # The text that was read and checked: what the run directory keeps (the file may change).
    source: str = field(default="", compare=False, repr=False)


def age_band(age: int) -> str:
    for low, high, label in AGE_BANDS:
        if low <= age <= high:
            return label
    return "under-18"
