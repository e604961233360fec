"""Citizens match their templates' distributions and are the same whoever makes them."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from esr.errors import ScenarioError
from esr.population import citizens
from esr.population.citizens import (
    BLOCK,
    CitizenFactory,
    draw_identity_parts,
    identity_cache_file,
    identity_parts,
    preview,
)
from esr.population.demographics import (
    Bands,
    Constant,
    LogNormal,
    Normal,
    Probability,
    Uniform,
    Weights,
    available_templates,
    load_template,
    template_file,
)
from esr.scenario.reader import load_scenario

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = 100_000
# Tolerances: 0.01 absolute on a share is over 6 standard errors at n = 100,000.
SHARE_TOLERANCE = 0.01
MEDIAN_TOLERANCE = 0.03


def scenario_for(tmp_path: Path, template: str, seed: int = 1, extra: str = "") -> Path:
    path = tmp_path / f"{template}.yml"
    path.write_text(f"scenario: t\nseed: {seed}\ncitizens: {{template: {template}, count: 10}}\n"
                    f"load_profile: {{sustain: 1m}}\n{extra}")
    return path


def sample(scenario_path: Path, size: int = SAMPLE, group: int = 0) -> list[dict]:
    factory = CitizenFactory(load_scenario(scenario_path), group)
    citizens = []
    for block in range(-(-size // BLOCK)):
        citizens.extend(factory.block(block))
    return citizens[:size]


def assert_matches(dist, values: np.ndarray, trait: str) -> None:
    """Check a sample against the distribution it was drawn from."""
    if isinstance(dist, Constant):
        assert (values == dist.value).all(), trait
    elif isinstance(dist, Probability):
        assert abs(values.astype(bool).mean() - dist.p) <= SHARE_TOLERANCE, trait
    elif isinstance(dist, Weights):
        assert set(values.tolist()) <= set(dist.values), trait
        for value, weight in zip(dist.values, dist.weights, strict=True):
            share = (values == value).mean()
            assert abs(share - weight) <= SHARE_TOLERANCE, (trait, value, share, weight)
    elif isinstance(dist, Bands):
        inside = np.zeros(len(values), dtype=bool)
        for (low, high), weight in zip(dist.bands, dist.weights, strict=True):
            in_band = (values >= low) & (values <= high)
            inside |= in_band
            assert abs(in_band.mean() - weight) <= SHARE_TOLERANCE, (trait, low, high)
        assert inside.all(), f"{trait}: values outside every band"
    elif isinstance(dist, LogNormal):
        assert values.min() >= dist.low and values.max() <= dist.high, trait
        median = float(np.median(values))
        assert abs(median - dist.median) <= MEDIAN_TOLERANCE * dist.median, (trait, median)
    elif isinstance(dist, Normal):
        assert values.min() >= dist.low and values.max() <= dist.high, trait
        assert abs(values.mean() - dist.mean) <= 0.05 * dist.sd + 1, trait
    elif isinstance(dist, Uniform):
        assert values.min() == dist.low and values.max() == dist.high, trait
    else:
        raise AssertionError(f"no check for {type(dist).__name__}")


@pytest.mark.parametrize("template", available_templates())
def test_template_distributions_hold_over_100k_citizens(tmp_path, template):
    path = scenario_for(tmp_path, template)
    traits = load_scenario(path).citizens[0].traits
    citizens = sample(path)
    for trait in ("age", "income", "veteran", "household_size", "disability", "employment",
                  "state", "language", "digital_comfort"):
        values = np.array([c[trait] for c in citizens], dtype=object)
        if not isinstance(getattr(traits, trait), (Weights, Constant)):
            values = values.astype(float)
        assert_matches(getattr(traits, trait), values, trait)


def test_every_senior_is_62_or_over_and_every_veteran_a_veteran(tmp_path):
    seniors = sample(scenario_for(tmp_path, "seniors"), 20_000)
    veterans = sample(scenario_for(tmp_path, "veterans"), 20_000)
    assert min(c["age"] for c in seniors) >= 62
    assert {c["age_band"] for c in seniors} == {"62+"}
    assert all(c["veteran"] for c in veterans)
    assert all(c["cohort"].endswith("|veteran") for c in veterans)


def test_overrides_change_the_distribution(tmp_path):
    path = tmp_path / "override.yml"
    path.write_text("scenario: t\ncitizens:\n  template: seniors\n  count: 5\n"
                    "  traits: {veteran: 0.5, age: {uniform: [70, 72]}}\n"
                    "load_profile: {sustain: 1m}\n")
    citizens = sample(path, 20_000)
    assert abs(np.mean([c["veteran"] for c in citizens]) - 0.5) <= SHARE_TOLERANCE
    assert {c["age"] for c in citizens} == {70, 71, 72}


def test_identity_fields_are_filled_and_safe(tmp_path):
    citizens = sample(scenario_for(tmp_path, "families"), 5_000)
    ids = [c["citizen_id"] for c in citizens]
    assert len(set(ids)) == len(ids)
    for citizen in citizens[:500]:
        assert citizen["name"] == f"{citizen['first_name']} {citizen['last_name']}"
        assert citizen["email"].split("@")[1] in ("example.com", "example.org", "example.net")
        assert "555-01" in citizen["phone"]
        assert len(citizen["zip"]) == 5 and citizen["address"] and citizen["city"]


def test_date_of_birth_gives_the_age_on_the_reference_date(tmp_path):
    path = scenario_for(tmp_path, "low_income", extra="reference_date: 2024-02-29\n")
    reference = dt.date(2024, 2, 29)
    for citizen in sample(path, 3_000):
        born = dt.date.fromisoformat(citizen["date_of_birth"])
        age = reference.year - born.year - ((reference.month, reference.day)
                                            < (born.month, born.day))
        assert age == citizen["age"], citizen


def test_same_seed_same_citizens_whatever_the_split(tmp_path):
    path = ROOT / "examples" / "mixed_demographics.yml"
    scenario = load_scenario(path)
    wanted = 5 * BLOCK
    for group in range(len(scenario.citizens)):
        one = CitizenFactory(scenario, group).stream()
        reference = {c["number"]: c for c in (next(one) for _ in range(wanted))}
        for workers in (1, 2, 3):
            seen = {}
            for share in range(workers):
                # Each worker is its own process in a run: a fresh factory per share.
                stream = CitizenFactory(load_scenario(path), group).stream(share, workers)
                for _ in range(-(-wanted // workers) + BLOCK):
                    citizen = next(stream)
                    seen[citizen["number"]] = citizen
            assert {k: seen[k] for k in reference} == reference, (group, workers)


def test_many_groups_streamed_together_make_each_block_once(tmp_path, monkeypatch):
    """A load process takes citizens of every group in turn; the factories' shared cache of
    blocks is small, so each stream holds the block it is taking."""
    made = []
    make = citizens._make_block
    monkeypatch.setattr(citizens, "_make_block",
                        lambda group, rng, first, *rest: made.append(first)
                        or make(group, rng, first, *rest))
    scenario = load_scenario(scenario_for(tmp_path, "students", seed=3))
    # More streams than the cache holds blocks, each taking its first block and 10 of its second.
    streams = [CitizenFactory(scenario, 0).stream() for _ in range(12)]
    taken = [[next(stream) for stream in streams] for _ in range(BLOCK + 10)]
    assert sorted(made) == [0] * len(streams) + [BLOCK] * len(streams)
    assert [row[0]["number"] for row in taken] == list(range(BLOCK + 10))


def test_a_stream_makes_its_next_block_ahead_and_keeps_no_other(tmp_path, monkeypatch):
    """A load process has each stream's next block made while it is idle (acting.py); the
    stream holds that block and the one it takes, and fills no cache of blocks."""
    made = []
    make = citizens._make_block
    monkeypatch.setattr(citizens, "_make_block",
                        lambda group, rng, first, *rest: made.append(first)
                        or make(group, rng, first, *rest))
    factory = CitizenFactory(load_scenario(scenario_for(tmp_path, "students", seed=3)), 0)
    stream = factory.stream(share=1, shares=2)
    taken = [next(stream) for _ in range(BLOCK * 3 // 4)]
    assert made == [BLOCK] and stream.upcoming() == 3
    stream.prepare(3)
    stream.prepare(3)  # asked again: made once
    assert made == [BLOCK, 3 * BLOCK]
    taken += [next(stream) for _ in range(BLOCK // 4 + 1)]
    assert made == [BLOCK, 3 * BLOCK]  # taken from the block made ahead
    assert [c["number"] for c in taken] == [*range(BLOCK, 2 * BLOCK), 3 * BLOCK]
    assert taken[-1] == factory.citizen(3 * BLOCK)
    stream.prepare(3)  # too late to matter: nothing made
    assert made == [BLOCK, 3 * BLOCK, 3 * BLOCK]  # (the last by factory.citizen)


def test_another_seed_gives_other_citizens(tmp_path):
    first = sample(scenario_for(tmp_path, "students", seed=1), 50)
    second = sample(scenario_for(tmp_path, "students", seed=2), 50)
    assert [c["age"] for c in first] != [c["age"] for c in second]
    assert first == sample(scenario_for(tmp_path, "students", seed=1), 50)


def test_citizens_are_the_same_in_another_process(tmp_path):
    """Identity pools and draws depend on nothing but the seed: not hash seeds, not the day."""
    path = ROOT / "examples" / "mixed_demographics.yml"
    here = list(preview(load_scenario(path), 40))
    for hash_seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-m", "esr.cli", "citizens", str(path), "--count", "40", "--json"],
            capture_output=True, text=True, check=True,
            env={**os.environ, "PYTHONHASHSEED": hash_seed,
                 "XDG_CACHE_HOME": str(tmp_path / f"cache-{hash_seed}")})  # drawn afresh there
        assert [json.loads(line) for line in out.stdout.splitlines()] == here


# The identity cache's tests draw the parts several times each: from a smaller pool (the
# size names the drawing, and the cache file, as the full one does): 0.03 s a drawing, not 0.6.
SMALL_POOL = 64


def test_identity_parts_are_kept_and_read_back_as_drawn(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(citizens, "_POOL_SIZE", SMALL_POOL)
    drawn = draw_identity_parts()
    assert identity_parts() == drawn  # drawn, then kept
    kept = identity_cache_file()
    assert kept.parent == tmp_path / "esr-locust" and json.loads(kept.read_text()) == drawn
    assert identity_parts() == drawn  # read back
    # Anything else in its place is drawn again, and replaced.
    for other in (json.dumps({**drawn, "streets": drawn["streets"][:5]}), "{", "[]"):
        kept.write_text(other)
        assert identity_parts() == drawn and json.loads(kept.read_text()) == drawn
    assert sorted(p.name for p in kept.parent.iterdir()) == [kept.name]


def test_the_cache_file_is_named_by_faker_s_version_and_the_drawing(monkeypatch):
    assert identity_cache_file().name.startswith(f"identity-faker-{metadata.version('faker')}-")
    monkeypatch.setattr(metadata, "version", lambda _: "0.0.1")
    name = identity_cache_file().name
    assert name.startswith("identity-faker-0.0.1-")
    monkeypatch.setattr(citizens, "_POOL_SIZE", 4096)  # another drawing, another file
    assert identity_cache_file().name.startswith("identity-faker-0.0.1-")
    assert identity_cache_file().name != name


def test_identity_parts_are_drawn_where_none_can_be_kept(tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "a-file"))  # no folder can go there
    monkeypatch.setattr(citizens, "_POOL_SIZE", SMALL_POOL)
    assert identity_parts() == draw_identity_parts()

    def no_source(_):
        raise OSError("could not get source code")  # as for a module installed without it

    monkeypatch.setattr(citizens.inspect, "getsource", no_source)
    assert identity_cache_file() is None and identity_parts() == draw_identity_parts()


def test_a_template_file_is_read_each_time_and_parsed_again_only_when_it_changed(tmp_path):
    """Templates read lately are kept by file and content (demographics.TEMPLATES_KEPT): the
    same content is not parsed again, a changed file is, and a broken one is still refused."""
    bundled = template_file("students").read_text()
    path = tmp_path / "mine.yml"
    path.write_text(bundled.replace("template: students", "template: mine"))
    first = load_template(path)
    assert first.behavior.patience == 8 and load_template(path) is first
    path.write_text(path.read_text().replace("patience: 8s ", "patience: 20s"))
    changed = load_template(path)
    assert changed.behavior.patience == 20 and changed.traits == first.traits
    path.write_text(path.read_text().replace("patience: 20s", "patience: -1s"))
    problems = []
    assert load_template(path, problems) is None and problems[0].path == "behavior.patience"
    with pytest.raises(ScenarioError):
        load_template(path)
    other = tmp_path / "other.yml"
    other.write_bytes(path.read_bytes())  # the same bytes in another file: read as that file
    with pytest.raises(ScenarioError) as raised:
        load_template(other)
    assert {problem.file for problem in raised.value.problems} == {str(other)}
    assert any("its file is 'other.yml'" in problem.message for problem in raised.value.problems)


def test_preview_interleaves_groups_in_proportion():
    scenario = load_scenario(ROOT / "examples" / "mixed_demographics.yml")  # 3000/2000/5000
    groups = [c["group"] for c in preview(scenario, 1000)]
    assert groups.count("seniors") == 300
    assert groups.count("veterans") == 200
    assert groups.count("low_income") == 500
