"""Whatever a scenario file holds, loading it gives a Scenario or one ScenarioError.

Three properties, with hypothesis: (a) random YAML documents and random text, (b) random
mutations of the example scenarios and of the bundled templates, never make the loader
raise anything but ScenarioError; (c) every problem it reports is located in a real file,
on a line that exists, and prints.

The crashes this found first (impossible dates, bad tags, recursive aliases, deep nesting,
huge numbers, odd URLs) are fixed, and pinned in test_scenario_errors.py; no crash is
tolerated here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import esr
from esr.population import demographics
from esr.scenario import reader as scenario

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = {p.stem: p.read_text(encoding="utf-8")
            for p in sorted((ROOT / "examples").glob("*.yml"))}
TEMPLATES = {p.name: p.read_text(encoding="utf-8")
             for p in sorted((ROOT / "demographics").glob("*.yml"))}


def fuzz(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


# ---- loading -------------------------------------------------------------------------------


def load(path: Path) -> esr.Scenario | esr.ScenarioError:
    """The scenario, or the ScenarioError; any other exception escapes and fails the test."""
    try:
        return esr.load_scenario(path)
    except esr.ScenarioError as error:
        return error


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """One folder for every example; it holds a good template for ./my.yml to find."""
    path = tmp_path_factory.mktemp("fuzz")
    (path / "my.yml").write_text(TEMPLATES["students.yml"].replace(
        "template: students", "template: my"), encoding="utf-8")
    return path


def write(folder: Path, content: str | bytes, name: str = "s.yml") -> Path:
    path = folder / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def assert_loads_or_fails_cleanly(path: Path) -> esr.Scenario | esr.ScenarioError:
    result = load(path)
    assert isinstance(result, (esr.Scenario, esr.ScenarioError))
    event("loaded" if isinstance(result, esr.Scenario) else "rejected")
    return result


# YAML's line breaks, which is what its marks count.
_BREAK = re.compile(r"\r\n|[\r\n\x85\u2028\u2029]")


def lines_in(file: Path) -> int:
    return len(_BREAK.findall(file.read_bytes().decode("utf-8", errors="replace"))) + 1


def assert_problems_are_located(error: esr.ScenarioError) -> None:
    assert error.problems, "a ScenarioError with no problem in it"
    for problem in error.problems:
        assert isinstance(problem.file, str) and Path(problem.file).is_file(), problem
        assert isinstance(problem.line, int) and isinstance(problem.column, int), problem
        assert problem.line >= 0 and problem.column >= 0, problem
        if problem.line:
            assert problem.column >= 1, problem
            assert problem.line <= lines_in(Path(problem.file)), problem
        assert isinstance(problem.path, str) and problem.message, problem
        assert str(problem).startswith(problem.file)
    places = [(p.file, p.line, p.column) for p in error.problems]
    assert places == sorted(places)
    assert all(line in str(error) for line in error.lines())


# ---- (a) random documents ------------------------------------------------------------------

LANGUAGE_KEYS = sorted({
    *scenario.SCENARIO_KEYS, *scenario.GROUP_KEYS, *scenario.PROFILE_KEYS, *scenario.STAGE_KEYS,
    *scenario.STEP_KEYS, *scenario.CHAOS_KEYS, *scenario.SLO_KEYS, *scenario.REPORT_KEYS,
    *demographics.TRAIT_NAMES, *demographics.BEHAVIOR_KEYS, *demographics.TEMPLATE_KEYS,
    "uniform", "normal", "lognormal", "bands", "weights", "preset", "mean", "sd", "median",
    "sigma", "min", "max"})
LANGUAGE_VALUES = [
    "seniors", "veterans", "senior", "./my.yml", "./missing.yml", "5m", "0", "30s", "1h30m",
    "500ms", "5", "5 minutes", "2s..10s", "10s..2s", "1000/min", "20/s", "0/s", "1000 per min",
    "GET /", "POST /apply", "POST apply", "FETCH /x", "{{ citizen.age }}", "{{ x", "{% if %}",
    "json.token", "header.X-Token", "status", "cookie.x", "kill_pod svc-fee after 1m",
    "kill_pod svc-fee after 1m for 30s", "latency", "erors", "html", "docx",
    "http://127.0.0.1:8080", "ftp://x", "2026-01-01", "us_population", "employed", "high", "en",
    "template:seniors", 0, 1, -1, 2, 100, 10_000, 0.5, 1.5, True, False, None]

text = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)
keys = st.one_of(st.sampled_from(LANGUAGE_KEYS), st.text(min_size=1, max_size=12))
scalars = st.one_of(
    st.sampled_from(LANGUAGE_VALUES), st.none(), st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12), st.floats(), text)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(keys, inner, max_size=6)),
    max_leaves=12)


def sometimes(strategy: st.SearchStrategy) -> st.SearchStrategy:
    """A plausible value most of the time, anything at all otherwise."""
    return st.one_of(strategy, strategy, strategy, values)


durations = sometimes(st.sampled_from(["30s", "1m", "5m", "10m", "0", "1h", "2s..5s"]))
groups = st.fixed_dictionaries(
    {"template": sometimes(st.sampled_from(["seniors", "veterans", "students", "./my.yml"])),
     "count": sometimes(st.integers(min_value=0, max_value=5000))},
    optional={"name": sometimes(st.sampled_from(["a", "b", "a b"])),
              "traits": st.dictionaries(st.sampled_from(demographics.TRAIT_NAMES), values,
                                        max_size=3),
              "behavior": st.dictionaries(st.sampled_from(demographics.BEHAVIOR_KEYS),
                                          sometimes(durations), max_size=3)})
profiles = st.fixed_dictionaries(
    {}, optional={"ramp_up": durations, "sustain": durations, "ramp_down": durations,
                  "spike_at": durations, "spike_size": sometimes(st.integers(0, 100_000)),
                  "spike_duration": durations, "allow_large_spike": values,
                  "arrival_rate": sometimes(st.sampled_from(["10/s", "600/min", "0/s"])),
                  "stages": sometimes(st.lists(st.fixed_dictionaries(
                      {"duration": durations, "citizens": sometimes(st.integers(0, 1000))},
                      optional={"spawn_rate": values}), max_size=3))})
steps = st.fixed_dictionaries(
    {"request": sometimes(st.sampled_from(["GET /form", "POST /apply", "post /x", "GET x"]))},
    optional={key: values for key in ("name", "json", "form", "body", "headers", "expect",
                                      "extract", "think_time")})
scenario_like = st.fixed_dictionaries(
    {"scenario": sometimes(st.just("fuzzed")),
     "citizens": sometimes(st.one_of(groups, st.lists(groups, max_size=3))),
     "load_profile": sometimes(profiles)},
    optional={"esr": values, "target": values, "seed": values, "reference_date": values,
              "journey": sometimes(st.lists(steps, max_size=3)), "probes": values,
              "network_jitter_ms": values, "chaos": values, "track_legal_blocks": values,
              "hitl_skip": values, "trace_context": values, "slo": values, "report": values,
              "descripton": values})
documents = st.one_of(values, st.dictionaries(keys, values, max_size=10), scenario_like)


@st.composite
def dumped(draw) -> str:
    """A random document as YAML text, in block or flow style."""
    return yaml.safe_dump(draw(documents), allow_unicode=draw(st.booleans()), sort_keys=False,
                          default_flow_style=draw(st.sampled_from([False, True, None])))


YAMLISH = ["scenario: x", "citizens:", "  - {template: seniors, count: 3}", "  template: seniors",
           "  count: 3", "load_profile:", "  sustain: 5m", "  ramp_up: 1m", "  stages:",
           "    - {duration: 1m, citizens: 5}", "journey:", "  - request: GET /", "chaos:",
           "  - kill_pod svc after 1m", "\t", "[", "]", "{", "}", ": ", "- ", "&a x", "*a", "? ",
           "!!str", "---", "...", "#", "'", '"', "|", ">", "<<: {}", "2026-01-01", "~", "", "  "]
raw_texts = st.one_of(
    st.text(max_size=300),
    st.binary(max_size=120),
    st.lists(st.one_of(st.sampled_from(YAMLISH), st.text(max_size=12)), max_size=16).map(
        "\n".join))
any_file = st.one_of(dumped(), raw_texts)


@fuzz(250)
@given(content=dumped())
def test_random_documents_load_or_fail_cleanly(folder, content):
    assert_loads_or_fails_cleanly(write(folder, content))


@fuzz(250)
@given(content=raw_texts)
def test_random_text_loads_or_fails_cleanly(folder, content):
    assert_loads_or_fails_cleanly(write(folder, content))


# ---- (b) mutations of the examples -----------------------------------------------------------

Mutation = Callable[[st.DrawFn, str], str]


def _lines(text_: str) -> list[str]:
    return text_.split("\n")


def delete_line(draw: st.DrawFn, text_: str) -> str:
    lines = _lines(text_)
    del lines[draw(st.integers(0, len(lines) - 1))]
    return "\n".join(lines)


def duplicate_line(draw: st.DrawFn, text_: str) -> str:
    lines = _lines(text_)
    i = draw(st.integers(0, len(lines) - 1))
    return "\n".join([*lines[:i + 1], lines[i], *lines[i + 1:]])


def swap_lines(draw: st.DrawFn, text_: str) -> str:
    lines = _lines(text_)
    i, j = (draw(st.integers(0, len(lines) - 1)) for _ in range(2))
    lines[i], lines[j] = lines[j], lines[i]
    return "\n".join(lines)


def insert_characters(draw: st.DrawFn, text_: str) -> str:
    at = draw(st.integers(0, len(text_)))
    junk = draw(st.one_of(st.text(min_size=1, max_size=5), st.sampled_from(
        [":", " ", "\t", "-", "[", "{", "'", "#", "\n", "  ", ",", "..", "0"])))
    return text_[:at] + junk + text_[at:]


def _paths(data: object, path: tuple = ()) -> list[tuple]:
    found = [path] if path else []
    if isinstance(data, dict):
        for key, item in data.items():
            found += _paths(item, (*path, key))
    elif isinstance(data, list):
        for i, item in enumerate(data):
            found += _paths(item, (*path, i))
    return found


def _edit_data(draw: st.DrawFn, text_: str, edit: Callable[[object, object], None]) -> str:
    """Parse, change the parent of one randomly chosen value, dump; leave unparsable text be."""
    try:
        data = yaml.safe_load(text_)
    except Exception:  # earlier mutations may have broken it in any way
        return text_
    paths = _paths(data)
    if not paths:
        return text_
    path = draw(st.sampled_from(paths))
    parent = data
    for part in path[:-1]:
        parent = parent[part]
    edit(parent, path[-1])
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


def delete_key(draw: st.DrawFn, text_: str) -> str:
    def drop(parent, key):
        del parent[key]
    return _edit_data(draw, text_, drop)


def replace_value(draw: st.DrawFn, text_: str) -> str:
    new = draw(values)

    def put(parent, key):
        parent[key] = new
    return _edit_data(draw, text_, put)


MUTATIONS: list[Mutation] = [delete_key, replace_value, duplicate_line, delete_line,
                             insert_characters, swap_lines]


@st.composite
def mutated(draw, originals: dict[str, str]) -> tuple[str, str]:
    name = draw(st.sampled_from(sorted(originals)))
    content = originals[name]
    for mutation in draw(st.lists(st.sampled_from(MUTATIONS), min_size=1, max_size=3)):
        content = mutation(draw, content)
    return name, content


@fuzz(300)
@given(example=mutated(EXAMPLES))
def test_mutated_examples_load_or_fail_cleanly(folder, example):
    _, content = example
    assert_loads_or_fails_cleanly(write(folder, content))


USES_TEMPLATES = "\n".join([
    "scenario: every template",
    "citizens:",
    *(f"  - {{template: ./{name}, count: 10}}" for name in TEMPLATES),
    "load_profile: {sustain: 1m}",
]) + "\n"


@fuzz(150)
@given(template=mutated(TEMPLATES))
def test_mutated_templates_load_or_fail_cleanly(folder, template):
    name, content = template
    for other in TEMPLATES:  # the other templates as bundled, this one mutated
        write(folder, content if other == name else TEMPLATES[other], other)
    assert_loads_or_fails_cleanly(write(folder, USES_TEMPLATES))


# ---- (c) problems are located --------------------------------------------------------------


@fuzz(300)
@given(content=st.one_of(any_file, mutated(EXAMPLES).map(lambda example: example[1])))
def test_every_problem_names_a_file_a_line_and_prints(folder, content):
    result = assert_loads_or_fails_cleanly(write(folder, content))
    if isinstance(result, esr.ScenarioError):
        assert_problems_are_located(result)
