"""The scenario language (v1): a YAML file becomes a frozen Scenario, or one ScenarioError.

Reading is one pass that records every problem with its file, line, key path and
a suggestion; cross-checks (a spike after the end, chaos after the run) run on
whatever parts were readable, so a user sees all their mistakes at once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import signal as signals
from dataclasses import dataclass
from pathlib import Path

from esr.errors import Problem, ScenarioError
from esr.permissions import is_http_url
from esr.population.demographics import (
    DEMOGRAPHICS_DIR,
    Template,
    available_templates,
    load_template,
    read_behavior,
    read_traits,
    template_file,
)
from esr.scenario import yaml_fields as f
from esr.scenario.model import (
    LANGUAGE_VERSION,
    ChaosAction,
    CitizenGroup,
    LoadProfile,
    Scenario,
    Slo,
    SloCheck,
    Spike,
    Stage,
    Step,
)
from esr.scenario.templating import is_template, template_problems
from esr.scenario.yaml_source import Document, KeyPath, format_path, read_yaml
from esr.units import format_duration

PROBES = ("latency", "errors", "act_route", "legal_blocks", "hitl", "outcome")
CHAOS_ACTIONS = ("kill_pod", "stop_service", "restore_service", "http", "signal", "latency",
                 "error_rate", "command")
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
REPORT_FORMATS = ("html", "pdf", "json", "junit")
DEFAULT_REFERENCE_DATE = dt.date(2026, 1, 1)
DEFAULT_TARGET = "http://127.0.0.1:8080"
# A spike bigger than this many times the plateau is more likely a typo than a plan.
SPIKE_SANE_FACTOR = 10

SCENARIO_KEYS = ("esr", "scenario", "description", "target", "seed", "reference_date", "citizens",
                 "load_profile", "journey", "probes", "network_jitter_ms", "chaos",
                 "track_legal_blocks", "hitl_skip", "trace_context", "slo", "report")
GROUP_KEYS = ("name", "template", "count", "traits", "behavior")
PROFILE_KEYS = ("ramp_up", "sustain", "ramp_down", "spike_at", "spike_size", "spike_duration",
                "allow_large_spike", "stages", "arrival_rate", "arrival_spacing", "max_citizens")
ARRIVAL_SPACINGS = ("uniform", "poisson")
STAGE_KEYS = ("duration", "citizens", "spawn_rate")
STEP_KEYS = ("name", "request", "json", "form", "body", "headers", "expect", "extract",
             "think_time")
CHAOS_KEYS = ("action", "target", "after", "duration", "method", "headers", "body", "signal",
              "delay", "rate", "endpoint", "command", "compose_project")
SLO_METRICS = ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms", "avg_ms", "error_rate",
               "rps_min", "impact_ratio_min", "recovery_time_s")
SLO_KEYS = (*SLO_METRICS, "endpoints", "window", "abort_on_fail")
# With abort_on_fail and no window, a breach must last this long before the run is stopped.
DEFAULT_ABORT_WINDOW_S = 10.0
# Top-level switches, with their defaults.
FLAGS = {"track_legal_blocks": False, "hitl_skip": False, "trace_context": True}
REPORT_KEYS = ("formats", "title", "traits")
# Traits the report can break outcomes down by: few values each (age has its bands already;
# income would make a row per dollar).
REPORT_TRAITS = ("veteran", "disability", "employment", "state", "language", "digital_comfort",
                 "household_size")
_CHAOS_LINE = re.compile(r"^\s*(\S+)\s+(\S+)\s+after\s+(\S+)(?:\s+for\s+(\S+))?\s*$")
EXTRACT_PATTERN = r"^(json(\.[A-Za-z0-9_-]+)+|header\.[A-Za-z0-9-]+|status)$"
_EXTRACT = re.compile(EXTRACT_PATTERN)


# ---- loading ---------------------------------------------------------------------------------


def load_scenario(path: str | Path) -> Scenario:
    """Read, check and freeze a scenario; raise ScenarioError listing every problem."""
    path = Path(path)
    doc = read_yaml(path)
    problems = []
    scenario = _read_scenario(doc, path, problems) if not doc.problems else None
    problems.extend(doc.problems)
    if problems or scenario is None:
        raise ScenarioError(problems or [Problem(str(path), 0, 0, "", "empty scenario")])
    return scenario


def _read_scenario(doc: Document, path: Path, problems: list) -> Scenario | None:
    data = f.mapping(doc, (), doc.data, "a scenario")
    if data is f.INVALID:
        return None
    f.check_keys(doc, (), data, SCENARIO_KEYS, required=("scenario", "citizens", "load_profile"))
    version = data.get("esr", LANGUAGE_VERSION)
    if isinstance(version, bool) or version != LANGUAGE_VERSION:
        doc.problem(("esr",), f"unsupported language version {version!r}; this ESR reads "
                    f"version {LANGUAGE_VERSION}", "migrate the file, or set esr: 1")
    name = f.text(doc, ("scenario",), data.get("scenario", "?"))
    target = _read_target(doc, data.get("target", DEFAULT_TARGET))
    seed = f.number(doc, ("seed",), data.get("seed", 0), integer=True, minimum=0)
    reference = _read_date(doc, ("reference_date",), data.get("reference_date",
                                                             DEFAULT_REFERENCE_DATE))
    # A missing section is already reported as missing: don't read it as empty as well.
    groups = _read_citizens(doc, data["citizens"], path.parent, problems) \
        if "citizens" in data else ()
    profile = _read_profile(doc, ("load_profile",), data["load_profile"]) \
        if "load_profile" in data else None
    journey = _read_journey(doc, data["journey"]) if "journey" in data else None
    probes = _read_probes(doc, data.get("probes", list(PROBES)))
    jitter = f.number(doc, ("network_jitter_ms",), data.get("network_jitter_ms", 0),
                      integer=True, minimum=0, maximum=60_000)
    chaos = tuple(a for p, v in f.items(doc, ("chaos",), data.get("chaos", []), "chaos actions")
                  if (a := _read_chaos(doc, p, v)))
    flags = {key: f.boolean(doc, (key,), data.get(key, default))
             for key, default in FLAGS.items()}
    slo = _read_slo(doc, data.get("slo", {}))
    formats, title, report_traits = _read_report(doc, data.get("report", {}))
    description = data.get("description", "")
    if profile:
        _check_timeline(doc, profile, groups, chaos)
    if doc.problems or problems:
        return None
    if flags["track_legal_blocks"] and "legal_blocks" not in probes:
        probes = (*probes, "legal_blocks")
    return Scenario(
        name=name, file=str(path), sha256=hashlib.sha256(doc.text.encode()).hexdigest(),
        source=doc.text,
        target=target, seed=seed, reference_date=reference, citizens=groups,
        load_profile=profile, journey=journey, probes=probes, network_jitter_ms=jitter,
        chaos=chaos, track_legal_blocks=flags["track_legal_blocks"],
        hitl_skip=flags["hitl_skip"], slo=slo, report_formats=formats,
        description=description if isinstance(description, str) else "", report_title=title,
        report_traits=report_traits, trace_context=flags["trace_context"])


def _read_target(doc: Document, value: object) -> str:
    url = f.text(doc, ("target",), value)
    if url is f.INVALID:
        return url
    if not is_http_url(url):
        doc.problem(("target",), f"'{url}' is not an http(s) URL",
                    "write it like http://127.0.0.1:8080")
        return f.INVALID
    return url.rstrip("/")


def _read_date(doc: Document, path: KeyPath, value: object) -> dt.date:
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        doc.problem(path, f"expected a date such as 2026-01-01, got {f.describe(value)}")
        return f.INVALID


# ---- citizens --------------------------------------------------------------------------------


def _read_citizens(doc: Document, value: object, folder: Path,
                   problems: list) -> tuple[CitizenGroup, ...]:
    groups = []
    templates: dict[Path, Template | None] = {}  # each template file is read (and reported) once
    listed = f.items(doc, ("citizens",), value, "a citizen group or a list of them")
    if value == []:
        doc.problem(("citizens",), "no citizen groups", "list at least one, e.g. "
                    "{template: low_income, count: 100}")
    for path, item in listed:
        group = _read_group(doc, path, item, folder, problems, templates)
        if group:
            groups.append((path, group))
    names: dict[str, KeyPath] = {}
    for path, group in groups:
        if group.name in names:
            doc.problem(path, f"two citizen groups are named '{group.name}' (the other is "
                        f"{format_path(names[group.name])})",
                        "give one of them its own 'name' key")
        names[group.name] = path
    return tuple(group for _, group in groups)


def _read_group(doc: Document, path: KeyPath, value: object, folder: Path,
                problems: list, templates: dict) -> CitizenGroup | None:
    data = f.mapping(doc, path, value, "a citizen group")
    if data is f.INVALID:
        return None
    f.check_keys(doc, path, data, GROUP_KEYS, required=("template", "count"))
    count = f.number(doc, (*path, "count"), data.get("count", 1), integer=True, minimum=1)
    template = _read_template_ref(doc, (*path, "template"), data.get("template"), folder,
                                  problems, templates)
    if not template:
        return None
    traits, behavior = template.traits, template.behavior
    if "traits" in data:
        traits = read_traits(doc, (*path, "traits"), data["traits"], complete=False, base=traits)
    if "behavior" in data:
        behavior = read_behavior(doc, (*path, "behavior"), data["behavior"], complete=False,
                                 base=behavior)
    name = f.text(doc, (*path, "name"), data.get("name", template.name))
    if name and not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        doc.problem((*path, "name"), f"'{name}' is not a usable group name",
                    "use letters, digits, '_', '-' and '.' only")
        name = f.INVALID
    if f.INVALID in (count, name) or traits is None or behavior is None:
        return None
    return CitizenGroup(name, data["template"], count, traits, behavior, template.description)


def _read_template_ref(doc: Document, path: KeyPath, value: object, folder: Path,
                       problems: list, templates: dict) -> Template | None:
    if value is None:
        return None  # already reported as missing
    name = f.text(doc, path, value)
    if not name:
        return None
    file = template_file(name, folder)
    if file is None:  # a scenario may name local files in its own folder, and no others
        doc.problem(path, f"template files must be inside the scenario's folder "
                    f"({folder.resolve()}); "
                    f"'{name[:60]}' is not", "copy the template next to the scenario, or name "
                    f"one of: {', '.join(available_templates())}")
        return None
    try:
        exists = file.is_file()
    except OSError:  # a name too long for the file system
        exists = False
    if not exists:
        known = available_templates()
        hint = f.did_you_mean(name, known) or f"known templates: {', '.join(known)}"
        what = "template file" if file.parent != DEMOGRAPHICS_DIR else "template"
        doc.problem(path, f"unknown {what} '{name[:60]}'", hint)
        return None
    if file not in templates:
        templates[file] = load_template(file, problems)
    return templates[file]


# ---- load profile ----------------------------------------------------------------------------


def _read_profile(doc: Document, path: KeyPath, value: object) -> LoadProfile | None:
    data = f.mapping(doc, path, value, "a load profile")
    if data is f.INVALID:
        return None
    f.check_keys(doc, path, data, PROFILE_KEYS)
    durations = {key: f.duration(doc, (*path, key), data[key])
                 for key in ("ramp_up", "sustain", "ramp_down") if key in data}
    stages = _read_stages(doc, (*path, "stages"), data["stages"]) if "stages" in data else ()
    rate = f.rate(doc, (*path, "arrival_rate"), data["arrival_rate"]) \
        if "arrival_rate" in data else None
    spike = _read_spike(doc, path, data)
    open_model = {key: reader(doc, (*path, key), data[key]) for key, reader in (
        ("arrival_spacing", lambda d, p, v: f.choice(d, p, v, ARRIVAL_SPACINGS, "spacing")),
        ("max_citizens", lambda d, p, v: f.number(d, p, v, integer=True, minimum=1)))
        if key in data}
    if f.INVALID in (*durations.values(), stages, rate, spike, *open_model.values()):
        return None
    if open_model and rate is None:
        doc.problem((*path, next(iter(open_model))), f"{next(iter(open_model))} applies to "
                    "the open model only", "add an arrival_rate, or remove it")
        return None
    if "stages" in data and (durations or spike or rate is not None):
        other = next(iter([*durations, *(["spike_at"] if spike else []),
                           *(["arrival_rate"] if rate is not None else [])]))
        doc.problem((*path, other), f"conflicting load models: stages and {other} together",
                    "describe the load with stages alone, or with ramp_up/sustain/ramp_down")
        return None
    if rate is not None and (spike or "ramp_up" in data or "ramp_down" in data):
        doc.problem((*path, "arrival_rate"), "an arrival rate (open model) cannot be combined "
                    "with ramp_up, ramp_down or a spike", "use arrival_rate with sustain alone")
        return None
    if rate is not None and rate <= 0:
        doc.problem((*path, "arrival_rate"), "the arrival rate must be above zero")
        return None
    if not stages and durations.get("sustain", 0) <= 0:
        what = "a sustain of zero" if "sustain" in data else "no sustain"
        doc.problem((*path, "sustain") if "sustain" in data else path,
                    f"{what} with no stages: citizens would never run",
                    "give sustain a duration such as 10m, or list stages")
        return None
    return LoadProfile(stages=stages, spike=spike, arrival_rate=rate, **open_model, **durations)


def _read_stages(doc: Document, path: KeyPath, value: object) -> tuple[Stage, ...]:
    if not isinstance(value, list) or not value:
        doc.problem(path, "expected a list of stages such as [{duration: 2m, citizens: 100}]")
        return f.INVALID
    stages = []
    for i, item in enumerate(value):
        where = (*path, i)
        data = f.mapping(doc, where, item, "a stage")
        if data is f.INVALID:
            continue
        f.check_keys(doc, where, data, STAGE_KEYS, required=("duration", "citizens"))
        duration = f.duration(doc, (*where, "duration"), data.get("duration", "1s"))
        citizens = f.number(doc, (*where, "citizens"), data.get("citizens", 0), integer=True,
                            minimum=0)
        rate = f.number(doc, (*where, "spawn_rate"), data["spawn_rate"], above=0) \
            if "spawn_rate" in data else None
        if duration is not f.INVALID and duration <= 0:
            doc.problem((*where, "duration"), "a stage must last longer than zero")
            continue
        if f.INVALID not in (duration, citizens, rate):
            stages.append(Stage(duration, citizens, rate))
    return tuple(stages) if len(stages) == len(value) else f.INVALID


def _read_spike(doc: Document, path: KeyPath, data: dict) -> Spike | None:
    keys = ("spike_at", "spike_size", "spike_duration")
    if not any(key in data for key in keys):
        return None
    if "spike_at" not in data or "spike_size" not in data:
        missing = "spike_size" if "spike_at" in data else "spike_at"
        doc.problem(path, f"a spike needs both spike_at and spike_size; {missing} is missing")
        return f.INVALID
    at = f.duration(doc, (*path, "spike_at"), data["spike_at"])
    size = f.number(doc, (*path, "spike_size"), data["spike_size"], integer=True, minimum=1)
    length = f.duration(doc, (*path, "spike_duration"), data.get("spike_duration", "1m"))
    allow = f.boolean(doc, (*path, "allow_large_spike"), data.get("allow_large_spike", False))
    if f.INVALID in (at, size, length, allow):
        return f.INVALID
    if length <= 0:
        doc.problem((*path, "spike_duration"), "a spike must last longer than zero")
        return f.INVALID
    return Spike(at, size, length) if not allow else _LargeSpike(at, size, length)


@dataclass(frozen=True)
class _LargeSpike(Spike):
    """A spike whose size the author confirmed with allow_large_spike."""


def _check_timeline(doc: Document, profile: LoadProfile, groups, chaos) -> None:
    end = profile.duration
    path = ("load_profile",)
    spike = profile.spike
    if spike and spike.at >= end:
        doc.problem((*path, "spike_at"), f"the spike starts at {format_duration(spike.at)}, "
                    f"after the profile ends at {format_duration(end)}",
                    "move spike_at inside the run, or lengthen sustain")
    elif spike and spike.at + spike.duration > end:
        doc.problem((*path, "spike_duration"), f"the spike runs until "
                    f"{format_duration(spike.at + spike.duration)}, past the end of the profile "
                    f"at {format_duration(end)}", "shorten spike_duration or move spike_at")
    plateau = sum(group.count for group in groups)
    if spike and groups and not isinstance(spike, _LargeSpike) \
            and spike.size > SPIKE_SANE_FACTOR * plateau:
        doc.problem((*path, "spike_size"), f"a spike of {spike.size} citizens is more than "
                    f"{SPIKE_SANE_FACTOR}x the plateau of {plateau}",
                    "if that is intended, add allow_large_spike: true")
    for i, action in enumerate(chaos):
        if action.after >= end:
            doc.problem(("chaos", i, "after"), f"chaos action '{action.action}' is due at "
                        f"{format_duration(action.after)}, after the run ends at "
                        f"{format_duration(end)}", "move it inside the run")


# ---- journey, probes, chaos, SLOs, report ----------------------------------------------------


def _read_journey(doc: Document, value: object) -> tuple[Step, ...] | None:
    steps = []
    for path, item in f.items(doc, ("journey",), value, "a list of journey steps"):
        step = _read_step(doc, path, item)
        if step:
            steps.append(step)
    if not steps:
        if not doc.problems:
            doc.problem(("journey",), "a journey needs at least one step")
        return None
    names = [step.name for step in steps]
    for name in {n for n in names if names.count(n) > 1}:
        doc.problem(("journey",), f"two steps are named '{name}'", "step names must be unique")
    return tuple(steps)


def _read_step(doc: Document, path: KeyPath, value: object) -> Step | None:
    data = f.mapping(doc, path, value, "a journey step")
    if data is f.INVALID:
        return None
    f.check_keys(doc, path, data, STEP_KEYS, required=("request",))
    request = f.text(doc, (*path, "request"), data.get("request", "GET /"))
    method, _, url = request.partition(" ") if request else ("", "", "")
    if request and method.upper() not in HTTP_METHODS:
        doc.problem((*path, "request"), f"unknown HTTP method '{method}'",
                    f.did_you_mean(method.upper(), HTTP_METHODS)
                    or "write it as 'POST /apply'")
    elif request and not url.strip().startswith("/"):
        doc.problem((*path, "request"), f"expected 'METHOD /path', got '{request}'",
                    "the path starts with / and is relative to the target")
    bodies = [key for key in ("json", "form", "body") if key in data]
    if len(bodies) > 1:
        doc.problem((*path, bodies[1]), f"a step sends one body; {' and '.join(bodies)} given",
                    "keep one of json, form or body")
    for key in ("json", "form", "body", "headers"):
        if key in data:
            _check_templates(doc, (*path, key), data[key])
    _check_templates(doc, (*path, "request"), url)
    for key in ("form", "headers"):
        if key in data:
            f.mapping(doc, (*path, key), data[key], key)
    expect = _read_expect(doc, (*path, "expect"), data.get("expect", []))
    extract = _read_extract(doc, (*path, "extract"), data["extract"]) \
        if "extract" in data else None
    think = f.span(doc, (*path, "think_time"), data["think_time"]) \
        if "think_time" in data else None
    name = f.text(doc, (*path, "name"), data.get("name", f"{method.upper()} {url.strip()}"))
    if doc.problems:
        return None
    return Step(name=name, method=method.upper(), path=url.strip(), json=data.get("json"),
                form=data.get("form"), body=data.get("body"), headers=data.get("headers"),
                expect=expect, extract=extract, think_time=think)


def _check_templates(doc: Document, path: KeyPath, value: object) -> None:
    """Compile every string as a template in ESR's sandbox, so that syntax errors, and work
    the run would refuse (templating.py), show before a run."""
    if isinstance(value, dict):
        for key, item in value.items():
            _check_templates(doc, (*path, key), item)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_templates(doc, (*path, i), item)
    elif is_template(value):
        try:
            for message, hint in template_problems(value):
                doc.problem(path, message, hint)
        except RecursionError:
            doc.problem(path, "template nested too deeply to read")


def _read_expect(doc: Document, path: KeyPath, value: object) -> tuple[int, ...]:
    statuses = []
    for where, item in f.items(doc, path, value, "HTTP statuses"):
        status = f.number(doc, where, item, integer=True, minimum=100, maximum=599)
        if status is not f.INVALID:
            statuses.append(status)
    return tuple(statuses)


def _read_extract(doc: Document, path: KeyPath, value: object) -> dict | None:
    data = f.mapping(doc, path, value, "a table of variable: source")
    if data is f.INVALID:
        return None
    for key, source in data.items():
        if not (isinstance(source, str) and _EXTRACT.match(source)):
            doc.problem((*path, key), f"cannot extract from {f.describe(source)}",
                        "use json.field.subfield, header.Name or status")
    return data


def _read_probes(doc: Document, value: object) -> tuple[str, ...]:
    probes = []
    for path, item in f.items(doc, ("probes",), value, "a list of probes"):
        name = f.choice(doc, path, item, PROBES, what="probe")
        if name and name not in probes:
            probes.append(name)
    return tuple(probes)


def _read_chaos(doc: Document, path: KeyPath, value: object) -> ChaosAction | None:
    if isinstance(value, str):
        match = _CHAOS_LINE.match(value)
        if not match:
            doc.problem(path, f"cannot read the chaos line '{value}'",
                        "write it as 'kill_pod svc-fee after 12m' (optionally 'for 2m')")
            return None
        action, target, after, duration = match.groups()
        value = {"action": action, "target": target, "after": after,
                 **({"duration": duration} if duration else {})}
    data = f.mapping(doc, path, value, "a chaos action")
    if data is f.INVALID:
        return None
    f.check_keys(doc, path, data, CHAOS_KEYS, required=("action", "after"))
    action = f.choice(doc, (*path, "action"), data.get("action", "kill_pod"), CHAOS_ACTIONS,
                      what="chaos action")
    target = f.text(doc, (*path, "target"), data.get("target", ""), nonempty=False)
    after = f.duration(doc, (*path, "after"), data.get("after", 0))
    duration = f.duration(doc, (*path, "duration"), data["duration"]) \
        if "duration" in data else None
    if action in ("kill_pod", "stop_service", "restore_service", "http", "signal") \
            and target == "":
        doc.problem(path, f"chaos action '{action}' needs a target")
    if action == "command" and "command" not in data:
        doc.problem(path, "chaos action 'command' needs a command")
    if action == "http" and target and not (target.startswith("/") or is_http_url(target)):
        doc.problem((*path, "target"), f"chaos action 'http' requests http:// and https:// URLs "
                    f"only, not '{target[:60]}'", "write a URL such as http://127.0.0.1:8080/admin"
                    ", or a path on the target such as /admin/reset")
    if action == "signal" and "signal" in data and signal_number(data["signal"]) is None:
        doc.problem((*path, "signal"), f"unknown signal {f.describe(data['signal'])}",
                    "name one such as TERM, KILL or STOP; CONT undoes STOP")
    if action == "latency":
        if "delay" not in data:
            doc.problem(path, "chaos action 'latency' needs a delay", "e.g. delay: 250ms")
        else:
            f.duration(doc, (*path, "delay"), data["delay"])
    if action == "error_rate":
        f.number(doc, (*path, "rate"), data.get("rate", 1.0), minimum=0, maximum=1)
    if f.INVALID in (action, target, after, duration) or "action" not in data \
            or "after" not in data:
        return None
    options = {k: v for k, v in data.items() if k not in ("action", "target", "after", "duration")}
    line, column = doc.place(path)
    return ChaosAction(action, target, after, duration, options or None, line, column,
                       format_path(path))


def signal_number(name: object) -> signals.Signals | None:
    """A signal by its name, with or without SIG (TERM, SIGKILL, stop), or None."""
    text = str(name).upper()
    return signals.Signals.__members__.get(text if text.startswith("SIG") else f"SIG{text}")


def _read_slo(doc: Document, value: object) -> Slo:
    data = f.mapping(doc, ("slo",), value, "SLO thresholds")
    if data is f.INVALID:
        return Slo()
    window = f.duration(doc, ("slo", "window"), data["window"]) if "window" in data else None
    if window is not None and window is not f.INVALID and window <= 0:
        doc.problem(("slo", "window"), "a window must last longer than zero")
    abort = f.boolean(doc, ("slo", "abort_on_fail"), data.get("abort_on_fail", False))
    if abort and window is None:
        window = DEFAULT_ABORT_WINDOW_S
    return Slo(_read_checks(doc, data), window or None, bool(abort))


def _read_checks(doc: Document, data: dict) -> tuple[SloCheck, ...]:
    f.check_keys(doc, ("slo",), data, SLO_KEYS)
    checks = [check for metric in SLO_METRICS if metric in data
              if (check := _read_check(doc, ("slo", metric), metric, data[metric], None))]
    endpoints = f.mapping(doc, ("slo", "endpoints"), data["endpoints"], "per-endpoint SLOs") \
        if "endpoints" in data else {}
    for endpoint, limits in (endpoints or {}).items():
        where = ("slo", "endpoints", endpoint)
        limits = f.mapping(doc, where, limits, f"SLO thresholds for {endpoint}")
        if not limits:
            continue
        f.check_keys(doc, where, limits, SLO_METRICS)
        checks += [check for metric in SLO_METRICS if metric in limits
                   if (check := _read_check(doc, (*where, metric), metric, limits[metric],
                                            endpoint))]
    return tuple(checks)


def _read_check(doc, path, metric, value, endpoint) -> SloCheck | None:
    ratio = metric in ("error_rate", "impact_ratio_min")
    threshold = f.number(doc, path, value, minimum=0, maximum=1 if ratio else None)
    return None if threshold is f.INVALID else SloCheck(metric, float(threshold), endpoint)


def _read_report(doc: Document, value: object
                 ) -> tuple[tuple[str, ...], str | None, tuple[str, ...]]:
    data = f.mapping(doc, ("report",), value, "report settings")
    if data is f.INVALID:
        return REPORT_FORMATS, None, ()
    f.check_keys(doc, ("report",), data, REPORT_KEYS)
    formats = [name for path, item in
               f.items(doc, ("report", "formats"), data.get("formats", list(REPORT_FORMATS)),
                       "a list of report formats")
               if (name := f.choice(doc, path, item, REPORT_FORMATS, what="report format"))]
    title = f.text(doc, ("report", "title"), data["title"]) if "title" in data else None
    traits = [name for path, item in f.items(doc, ("report", "traits"), data.get("traits", []),
                                             "a list of traits")
              if (name := f.choice(doc, path, item, REPORT_TRAITS, what="report trait"))]
    return tuple(formats), title or None, tuple(dict.fromkeys(traits))
