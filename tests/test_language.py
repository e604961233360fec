"""The scenario language as the design shows it: the seed, its tricks, units and the schema."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import jsonschema
import pytest
import yaml

import esr
from esr.scenario.model import ChaosAction, SloCheck, Spike, Stage
from esr.scenario.schema import scenario_schema
from esr.units import UnitError, format_duration, parse_duration, parse_rate, parse_span

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.yml"))
TRICKS = ("mixed_demographics", "spike", "jitter", "chaos", "legal_blocks", "hitl_skip")


def as_json(path: Path) -> object:
    """A YAML file as JSON data (YAML dates become ISO strings, as an editor sees them)."""
    return json.loads(json.dumps(yaml.safe_load(path.read_text()), default=str))


def test_the_seed_and_every_trick_exist():
    names = {p.stem for p in EXAMPLES}
    assert {"rental_stress", *TRICKS} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_examples_load_and_match_the_schema(path):
    scenario = esr.load_scenario(path)
    assert scenario.name and scenario.citizens and scenario.load_profile.duration > 0
    jsonschema.validate(as_json(path), scenario_schema(),
                        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def test_the_seed_scenario_reads_as_written():
    seed = esr.load_scenario(ROOT / "examples" / "rental_stress.yml")
    assert seed.name == "HUD Rental Stress"
    assert [(g.template, g.count) for g in seed.citizens] == [("low_income", 10000)]
    assert (seed.load_profile.ramp_up, seed.load_profile.sustain) == (300, 1500)
    assert seed.probes == ("latency", "errors", "act_route")
    assert seed.slo.checks == (SloCheck("p95_ms", 800.0), SloCheck("error_rate", 0.01))
    assert seed.slo.window is None and not seed.slo.abort_on_fail
    assert seed.trace_context  # W3C traceparent and baggage, unless trace_context: false
    assert seed.seed == 42 and seed.target == "http://127.0.0.1:8080"
    assert seed.reference_date == dt.date(2026, 1, 1)


def test_the_tricks_read_as_written():
    load = {stem: esr.load_scenario(ROOT / "examples" / f"{stem}.yml") for stem in TRICKS}
    assert [g.name for g in load["mixed_demographics"].citizens] == [
        "seniors", "veterans", "low_income"]
    veterans = load["mixed_demographics"].citizens[1]
    assert veterans.traits.disability.p == 0.4 and veterans.traits.veteran.p == 1.0
    assert load["mixed_demographics"].citizens[2].behavior.retries == 0
    assert load["spike"].load_profile.spike == Spike(600, 8000, 60)
    assert load["jitter"].network_jitter_ms == 50
    assert load["chaos"].chaos[0] == ChaosAction("kill_pod", "svc-fee", 720, 120)
    assert load["chaos"].chaos[1].options == {"method": "POST"}
    assert load["legal_blocks"].track_legal_blocks and "legal_blocks" in load[
        "legal_blocks"].probes
    assert load["hitl_skip"].hitl_skip
    assert load["hitl_skip"].load_profile.stages == (
        Stage(60, 100, None), Stage(180, 300, None), Stage(60, 50, None))


def test_open_model_and_journey():
    scenario = esr.load_scenario(ROOT / "examples" / "open_model.yml")
    assert scenario.load_profile.arrival_rate == 20.0
    form, apply = scenario.journey
    assert (form.method, form.path, form.extract) == ("GET", "/form", {"token": "json.form_token"})
    assert (apply.method, apply.path, apply.expect) == ("POST", "/apply", (200, 202, 451))
    assert str(form.think_time) == "2s..5s"


def test_citizens_may_be_one_group_and_a_template_may_be_a_path(tmp_path):
    (tmp_path / "mine.yml").write_text(
        (ROOT / "demographics" / "students.yml").read_text().replace(
            "template: students", "template: mine"))
    path = tmp_path / "s.yml"
    path.write_text("scenario: own\ncitizens: {template: ./mine.yml, count: 4}\n"
                    "load_profile: {sustain: 30s}\n")
    scenario = esr.load_scenario(path)
    assert scenario.citizens[0].name == "mine" and scenario.citizens[0].count == 4


@pytest.mark.parametrize(("text", "seconds"), [
    ("500ms", 0.5), ("90s", 90), ("5m", 300), ("1h30m", 5400), ("1h 2m 3s", 3723), (0, 0)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["5", 5, "5 minutes", "m", "", "1x", True, None, "-5s"])
def test_bad_durations(text):
    with pytest.raises(UnitError):
        parse_duration(text)


@pytest.mark.parametrize("seconds", [0, 0.5, 1, 59, 60, 90, 3600, 5400, 3723])
def test_durations_round_trip(seconds):
    assert parse_duration(format_duration(seconds)) == seconds


def test_rates_and_spans():
    assert parse_rate("1000/min") == pytest.approx(1000 / 60)
    assert parse_rate("20/s") == 20
    assert parse_rate("36/hour") == 0.01
    with pytest.raises(UnitError):
        parse_rate("20 per second")
    assert (parse_span("2s..10s").low, parse_span("2s..10s").high) == (2, 10)
    with pytest.raises(UnitError):
        parse_span("10s..2s")


def test_the_schema_covers_every_key_the_loader_reads():
    from esr.scenario import reader as s

    schema = scenario_schema()
    assert set(schema["properties"]) == set(s.SCENARIO_KEYS)
    assert set(schema["properties"]["load_profile"]["properties"]) == set(s.PROFILE_KEYS)
    jsonschema.Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("bad", [
    {"scenario": "x", "citizens": {"template": "seniors", "count": 1},
     "load_profile": {"ramp_upp": "5m"}},
    {"scenario": "x", "citizens": {"template": "seniors", "count": 0},
     "load_profile": {"sustain": "5m"}},
    {"scenario": "x", "citizens": {"template": "seniors", "count": 1},
     "load_profile": {"sustain": "5 minutes"}},
    {"scenario": "x", "citizens": {"template": "seniors", "count": 1},
     "load_profile": {"sustain": "5m"}, "probes": ["erors"]},
])
def test_the_schema_rejects_what_the_loader_rejects(bad):
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, scenario_schema())


def test_schema_command_prints_the_schema(esr_cli):
    out = esr_cli("schema")
    assert out.returncode == 0
    assert json.loads(out.stdout) == json.loads(json.dumps(scenario_schema()))
