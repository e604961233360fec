"""The load profile's stage table and what it asks for at each moment (esr/scenario/stages.py).

The pure core the load shape walks once a second in a run: here every phase and its edges
are checked in microseconds, where a run shows one profile in seconds.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from esr.scenario.reader import load_scenario
from esr.scenario.stages import Phase, citizens_at, open_model_pool, plan_stages


def scenario(tmp_path: Path, load_profile: str, count: int = 10, extra: str = ""):
    path = tmp_path / "scenario.yml"
    path.write_text(f"scenario: stages\ncitizens: {{template: students, count: {count}, "
                    f"behavior: {{think_time: 1s..3s, patience: 5s}}}}\n"
                    f"load_profile: {load_profile}\n{extra}")
    return load_scenario(path)


def asked(phases: tuple[Phase, ...], t: float) -> tuple[str, int, float] | None:
    found = citizens_at(phases, t)
    return None if found is None else (found[0].name, found[1], found[2])


def test_ramp_up_plateau_ramp_down_and_the_end(tmp_path):
    phases = plan_stages(scenario(tmp_path, "{ramp_up: 10s, sustain: 20s, ramp_down: 10s}"))
    assert phases == (Phase("ramp_up", 0, 10, 10, 1.0), Phase("plateau", 10, 30, 10, 1.0),
                      Phase("ramp_down", 30, 40, 0, 1.0))
    # A ramp up asks for the peak at once and lets Locust spawn at the phase's rate.
    assert asked(phases, 0) == asked(phases, 9.99) == ("ramp_up", 10, 1.0)
    assert asked(phases, 10) == asked(phases, 29.99) == ("plateau", 10, 1.0)
    # A ramp down lowers the citizens step by step, from the plateau's to none.
    assert asked(phases, 30) == ("ramp_down", 10, 1.0)
    assert asked(phases, 35) == ("ramp_down", 5, 1.0)
    assert asked(phases, 39.9) == ("ramp_down", 1, 1.0)
    down = [citizens_at(phases, 30 + k / 10)[1] for k in range(100)]
    assert down == sorted(down, reverse=True) and min(down) >= 1
    # The end of the table is the end of the run (the shape then stops it gracefully).
    assert citizens_at(phases, 40) is None and citizens_at(phases, 1e6) is None
    assert citizens_at(phases, -0.1) is None


def test_a_plateau_alone_arrives_within_a_tenth_of_its_length(tmp_path):
    phases = plan_stages(scenario(tmp_path, "{sustain: 20s}"))
    assert phases == (Phase("plateau", 0, 20, 10, 5.0),)  # 10 citizens over 2 s
    long = plan_stages(scenario(tmp_path, "{sustain: 10m}"))
    assert long[0].spawn_rate == 10 / 5.0  # at most SUDDEN_S, however long the plateau


def test_a_spike_sits_on_the_plateau_and_the_ramp_down_starts_from_the_peak(tmp_path):
    phases = plan_stages(scenario(tmp_path, "{ramp_up: 10s, sustain: 20s, ramp_down: 5s, "
                                            "spike_at: 26s, spike_size: 5, spike_duration: 4s}"))
    assert [(p.name, p.start, p.end, p.citizens) for p in phases] == [
        ("ramp_up", 0, 10, 10), ("plateau", 10, 26, 10), ("spike", 26, 30, 15),
        ("ramp_down", 30, 35, 0)]
    assert asked(phases, 25.9) == ("plateau", 10, 1.0)
    assert asked(phases, 26) == ("spike", 15, 5 / 0.4)  # the 5 extra arrive within 0.4 s
    # The spike ends where the ramp down begins: it ramps down from the plateau's citizens.
    assert asked(phases, 30) == ("ramp_down", 10, 2.0)
    assert citizens_at(phases, 35) is None


def test_a_spike_inside_the_plateau_splits_it(tmp_path):
    phases = plan_stages(scenario(tmp_path, "{ramp_up: 10s, sustain: 20s, spike_at: 15s, "
                                            "spike_size: 5, spike_duration: 4s}"))
    assert [(p.name, p.start, p.end) for p in phases] == [
        ("ramp_up", 0, 10), ("plateau", 10, 15), ("spike", 15, 19), ("plateau", 19, 30)]
    assert [asked(phases, t)[:2] for t in (14.9, 15, 18.9, 19, 29.9)] == [
        ("plateau", 10), ("spike", 15), ("spike", 15), ("plateau", 10), ("plateau", 10)]


def test_stages_walk_the_table_in_order(tmp_path):
    """The table test_run.py's stage run follows in Locust's own user count."""
    phases = plan_stages(scenario(tmp_path, """
  stages:
    - {duration: 3s, citizens: 4, spawn_rate: 50}
    - {duration: 3s, citizens: 12}
    - {duration: 3s, citizens: 2, spawn_rate: 50}"""))
    assert [(p.name, p.start, p.end, p.citizens) for p in phases] == [
        ("stage 1", 0, 3, 4), ("stage 2", 3, 6, 12), ("stage 3", 6, 9, 2)]
    assert asked(phases, 0) == ("stage 1", 4, 50)
    assert asked(phases, 2.99) == ("stage 1", 4, 50)
    # No spawn rate: the 8 more arrive within a tenth of the stage.
    assert asked(phases, 3) == ("stage 2", 12, pytest.approx(8 / 0.3))
    assert asked(phases, 8.99) == ("stage 3", 2, 50)
    assert citizens_at(phases, 9) is None


def test_time_and_user_scales_apply_to_every_phase(tmp_path):
    ramps = plan_stages(scenario(tmp_path, "{ramp_up: 10s, sustain: 20s, spike_at: 15s, "
                                           "spike_size: 5, spike_duration: 4s}"),
                        time_scale=0.5, user_scale=2)
    assert [(p.name, p.start, p.end, p.citizens) for p in ramps] == [
        ("ramp_up", 0, 5, 20), ("plateau", 5, 7.5, 20), ("spike", 7.5, 9.5, 30),
        ("plateau", 9.5, 15, 20)]
    assert ramps[0].spawn_rate == 20 / 5
    staged = plan_stages(scenario(tmp_path, "{stages: [{duration: 4s, citizens: 3, "
                                            "spawn_rate: 50}]}"), time_scale=0.5, user_scale=2)
    assert staged == (Phase("stage 1", 0, 2, 6, 50 * 2 / 0.5),)
    # However small the scale, a run has at least one citizen.
    assert plan_stages(scenario(tmp_path, "{sustain: 10s}"), user_scale=0.001)[0].citizens == 1


def test_the_open_model_starts_with_what_little_s_law_asks_for_with_headroom(tmp_path):
    # 100 arrivals a second, a one-step journey expected to take 0.1 s: 1.5 x 10.
    one_step = scenario(tmp_path, "{arrival_rate: 100/s, sustain: 10s}")
    assert open_model_pool(one_step, 1.0, 1.0) == 15
    assert plan_stages(one_step) == (Phase("open", 0, 10, 15, 15 / 0.1),)
    # Three steps: three expected answers and the two mean think times between them (2 s by
    # default, 1-3 s).
    journey = "journey:\n" + "".join(f"  - {{name: s{k}, request: GET /s{k}}}\n"
                                     for k in range(3))
    three_steps = scenario(tmp_path, "{arrival_rate: 20/s, sustain: 10s}", extra=journey)
    assert open_model_pool(three_steps, 1.0, 1.0) == math.ceil(1.5 * 20 * (3 * 0.1 + 2 * 2))
    # Scaled: the rate by users / time, the think times by time.
    assert open_model_pool(three_steps, 0.5, 2.0) == math.ceil(1.5 * 80 * (3 * 0.1 + 2 * 1))
    # max_citizens caps it (scaled as citizens are); a trickle still has a few ready.
    capped = scenario(tmp_path, "{arrival_rate: 20/s, sustain: 10s, max_citizens: 50}",
                      extra=journey)
    assert open_model_pool(capped, 1.0, 1.0) == 50 and open_model_pool(capped, 1.0, 0.5) == 25
    trickle = scenario(tmp_path, "{arrival_rate: 36/hour, sustain: 10s}")
    assert open_model_pool(trickle, 1.0, 1.0) == 4
