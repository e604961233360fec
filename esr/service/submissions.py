"""What the service accepts as a run: a scenario read and checked exactly as `validate` does,
aimed only at the agency's own targets, within its limits. Nothing here starts anything.

A scenario that arrives over the network gets no permission beyond HTTP requests (no
command, signal or container action), whatever it asks: the service grants none. Its
requests go to the allowed origins under their own names: no step or action sets Host.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from esr.errors import EsrError, Problem, ScenarioError
from esr.permissions import check
from esr.scenario.model import Scenario
from esr.scenario.reader import load_scenario
from esr.scenario.stages import plan_stages
from esr.service.agencies import Caller
from esr.units import format_duration

MAX_SCENARIO_BYTES = 256 * 1024
# The largest time_scale or user_scale: far past any limit an agency has, and finite, so the
# limits are what refuse an oversize run (an infinite scale would slip past them as NaN).
MAX_SCALE = 1e6
SCENARIO_FILE = "scenario.yml"  # what a submitted scenario is called in messages and run dirs


class Refused(Exception):
    """A submission the service will not run: an HTTP status, a message, located problems."""

    def __init__(self, status: int, message: str, problems: list[dict] | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.message = status, message
        self.problems, self.headers = problems or [], headers or {}


@dataclass(frozen=True)
class Submission:
    scenario: str  # the YAML text
    host: str | None = None
    time_scale: float = 1.0
    user_scale: float = 1.0

    @property
    def settings(self) -> dict:
        return {"host": self.host, "time_scale": self.time_scale, "user_scale": self.user_scale}

    @property
    def sha256(self) -> str:
        """What an Idempotency-Key is held to: the same key must come with the same body."""
        body = json.dumps({"scenario": self.scenario, **self.settings}, sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()


def accept(caller: Caller, submission: Submission) -> Scenario:
    """The scenario of a submission the caller may run; Refused (413/422) otherwise."""
    if len(submission.scenario.encode()) > MAX_SCENARIO_BYTES:
        raise Refused(413, f"the scenario is {len(submission.scenario.encode()):,} bytes; "
                      f"the service accepts up to {MAX_SCENARIO_BYTES:,}")
    for name in ("time_scale", "user_scale"):
        if not 0 < getattr(submission, name) <= MAX_SCALE:  # NaN and infinity fail too
            raise Refused(422, f"{name} must be above 0 and at most {MAX_SCALE:,.0f}")
    scenario = read_submitted(submission.scenario)
    _check_targets(caller, scenario, submission.host)
    _check_host_headers(scenario)
    _check_size(caller, scenario, submission)
    return scenario


def read_submitted(text: str) -> Scenario:
    """Read scenario text as `validate` reads a file; problems raise Refused(422) as data."""
    with tempfile.TemporaryDirectory(prefix="esr-submitted-") as folder:
        path = Path(folder) / SCENARIO_FILE
        path.write_text(text)
        try:
            scenario = load_scenario(path)
            check(scenario, frozenset())
        except ScenarioError as error:
            problems = [replace(p, file=SCENARIO_FILE if p.file == str(path) else p.file)
                        for p in error.problems]
            raise Refused(422, f"{len(problems)} problem{'s' if len(problems) != 1 else ''} "
                          "found in the scenario", [_problem(p) for p in problems]) from None
        except EsrError as error:
            raise Refused(422, str(error).replace(str(path), SCENARIO_FILE)) from None
    return scenario


def _problem(problem: Problem) -> dict:
    return {"line": problem.line, "column": problem.column, "path": problem.path,
            "message": problem.message, "hint": problem.hint}


def targets_of(scenario: Scenario, host: str | None) -> list[str]:
    """Every URL a run would send requests to: the target (or --host) and chaos http actions,
    a path among them on the target as the engine resolves it (esr/engine/chaos.py)."""
    base = host or scenario.target
    return [base, *(f"{base.rstrip('/')}{action.target}" if action.target.startswith("/")
                    else action.target
                    for action in scenario.chaos if action.action == "http")]


def _check_targets(caller: Caller, scenario: Scenario, host: str | None) -> None:
    outside = [url for url in targets_of(scenario, host) if not caller.policy.allows(url)]
    if outside:
        allowed = ", ".join(caller.policy.targets) or "none (ask for a token made with " \
            "--allow-target)"
        raise Refused(422, f"agency '{caller.agency}' may not load {', '.join(outside)}; "
                      f"its allowed targets: {allowed}")


def _check_host_headers(scenario: Scenario) -> None:
    """A request that names its own Host reaches the allowed address as another site (one
    address, a shared host or a CDN, serves many): the allow-list would hold in name only."""
    setting = [f"journey step '{step.name}'" for step in scenario.journey or ()
               if _names_host(step.headers)]
    setting += [f"{action.path or 'a chaos action'}" for action in scenario.chaos
                if action.action == "http" and _names_host((action.options or {}).get("headers"))]
    if setting:
        raise Refused(422, f"{', '.join(setting)} set{'s' if len(setting) == 1 else ''} the Host "
                      "header; on the service a run reaches its allowed targets by their own "
                      "names only (remove the header)")


def _names_host(headers: object) -> bool:
    return isinstance(headers, dict) and any(str(name).strip().lower() == "host"
                                             for name in headers)


def _check_size(caller: Caller, scenario: Scenario, submission: Submission) -> None:
    phases = plan_stages(scenario, submission.time_scale, submission.user_scale)
    citizens, duration = max(p.citizens for p in phases), max(p.end for p in phases)
    policy = caller.policy
    if citizens > policy.max_citizens:
        raise Refused(422, f"the run peaks at {citizens:,} citizens; agency '{caller.agency}' "
                      f"may run up to {policy.max_citizens:,} (lower user_scale or the counts)")
    if duration > policy.max_duration_s:
        raise Refused(422, f"the run lasts {format_duration(duration)}; agency "
                      f"'{caller.agency}' may run up to {format_duration(policy.max_duration_s)}"
                      " (lower time_scale or the load profile)")
