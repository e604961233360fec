"""The load profile as a stage table: pure, and free of Locust.

The same table is printed by `esr-locust compile`, walked by `ScenarioShape` on
the master, written to run.json by the launcher, and used by the report to mark phases.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from esr.scenario.model import LoadProfile, Scenario

# How fast a spike or an unrated stage arrives: within a tenth of its length, at most this long.
SUDDEN_S = 5.0


@dataclass(frozen=True)
class Phase:
    name: str  # ramp_up, plateau, spike, ramp_down, stage 1, …, open
    start: float  # seconds from the start of the run
    end: float
    citizens: int  # concurrent citizens at the end of the phase (the pool, in an open model)
    spawn_rate: float  # citizens per second on the way there


def plan_stages(scenario: Scenario, time_scale: float = 1.0, user_scale: float = 1.0,
                ) -> tuple[Phase, ...]:
    """The phases of a run, in scaled seconds and citizens."""
    profile = scenario.load_profile
    peak = max(1, round(sum(group.count for group in scenario.citizens) * user_scale))
    if profile.stages:
        return _stages(profile, time_scale, user_scale)
    if profile.arrival_rate is not None:
        pool = open_model_pool(scenario, time_scale, user_scale)
        # The first citizens at once: arrivals are due from the run's first instant.
        return (Phase("open", 0.0, profile.sustain * time_scale, pool, pool / OPEN_SPAWN_S),)
    return _ramps(profile, time_scale, user_scale, peak)


def _stages(profile: LoadProfile, time_scale: float, user_scale: float) -> tuple[Phase, ...]:
    phases, start, before = [], 0.0, 0
    for i, stage in enumerate(profile.stages, 1):
        length = stage.duration * time_scale
        citizens = round(stage.citizens * user_scale)
        rate = stage.spawn_rate * user_scale / time_scale if stage.spawn_rate else \
            max(abs(citizens - before), 1) / _sudden(length)
        phases.append(Phase(f"stage {i}", start, start + length, citizens, rate))
        start, before = start + length, citizens
    return tuple(phases)


def _ramps(profile: LoadProfile, time_scale: float, user_scale: float,
           peak: int) -> tuple[Phase, ...]:
    ramp_up, sustain, ramp_down = (x * time_scale for x in
                                   (profile.ramp_up, profile.sustain, profile.ramp_down))
    plateau_rate = peak / ramp_up if ramp_up else peak / _sudden(sustain)
    phases = [Phase("ramp_up", 0.0, ramp_up, peak, plateau_rate)] if ramp_up else []
    plateau = [(ramp_up, ramp_up + sustain)]
    spike = profile.spike
    if spike:
        at, length = spike.at * time_scale, spike.duration * time_scale
        size = max(1, round(spike.size * user_scale))
        plateau = [(ramp_up, at), (at + length, ramp_up + sustain)]
        phases.append(Phase("spike", at, at + length, peak + size, size / _sudden(length)))
    for start, end in plateau:
        if end > start:
            phases.append(Phase("plateau", start, end, peak, plateau_rate))
    if ramp_down:
        end = ramp_up + sustain
        phases.append(Phase("ramp_down", end, end + ramp_down, 0, peak / ramp_down))
    return tuple(sorted(phases, key=lambda p: p.start))


def _sudden(length: float) -> float:
    return max(min(length / 10, SUDDEN_S), 0.1)


OPEN_SPAWN_S = 0.1
# A request's time expected before any is seen: the pool starts from it and then follows what
# the target takes (engine/arrivals.py).
EXPECTED_RESPONSE_S = 0.1


def open_model_pool(scenario: Scenario, time_scale: float, user_scale: float) -> int:
    """The citizens an open-model run starts with: Little's law for the journey time expected
    (each step EXPECTED_RESPONSE_S, the mean think time between steps), with half again as
    headroom; each load process then grows or shrinks its share with the load, up to
    max_citizens."""
    profile = scenario.load_profile
    rate = profile.arrival_rate * user_scale / time_scale
    steps = len(scenario.journey or ()) or 1
    think = max((g.behavior.think_time.low + g.behavior.think_time.high) / 2
                for g in scenario.citizens) * time_scale
    pool = max(4, math.ceil(1.5 * rate * (steps * EXPECTED_RESPONSE_S + (steps - 1) * think)))
    if profile.max_citizens:
        pool = min(pool, max(1, round(profile.max_citizens * user_scale)))
    return pool


def citizens_at(phases: tuple[Phase, ...], t: float) -> tuple[Phase, int, float] | None:
    """The phase in force at time t, the citizens it asks for, and the spawn rate; None at the end.

    A ramp down lowers citizens step by step so the shape sees a smooth decline; a
    ramp up simply asks for the peak and lets Locust spawn at the phase's rate.
    """
    for phase in phases:
        if phase.start <= t < phase.end:
            if phase.name == "ramp_down":
                before = _before(phases, phase)
                left = (phase.end - t) / (phase.end - phase.start)
                return phase, max(0, math.ceil(before * left)), phase.spawn_rate
            return phase, phase.citizens, phase.spawn_rate
    return None


def _before(phases: tuple[Phase, ...], phase: Phase) -> int:
    earlier = [p for p in phases if p.end <= phase.start and p.name != "spike"]
    return earlier[-1].citizens if earlier else 0
