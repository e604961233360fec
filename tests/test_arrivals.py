"""The open model's scheduler (esr/engine/arrivals.py), in this process on a clock it is handed:
arrivals fall due at the rate, in proportion to the citizens ready to take them, evenly
spaced, and beyond the backlog they count as missed.

test_journeys.py shows the same scheduler falling behind an overloaded target in a real run.
"""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import gevent
import pytest

from esr.engine import arrivals
from esr.engine.arrivals import Arrivals
from esr.scenario.reader import load_scenario
from esr.scenario.stages import open_model_pool

T0 = 1_800_000_000.0
TICK_S = 0.125  # what each reading of the clock advances it by: exact in binary, so the
# arrivals due in a tick add up exactly


class SteppingClock:
    """time.time() for the scheduler: T0, then TICK_S later at each reading; after `ticks`
    ticks it ends the scheduler's greenlet, as Arrivals.stop() would."""

    def __init__(self):
        self.readings, self.ticks = 0, 0

    def time(self) -> float:
        if self.readings > self.ticks:  # the first reading starts the clock; one per tick
            raise gevent.GreenletExit
        self.readings += 1
        return T0 + (self.readings - 1) * TICK_S


def fake_run(citizens: int) -> SimpleNamespace:
    return SimpleNamespace(environment=SimpleNamespace(runner=SimpleNamespace(
        user_count=citizens)), probes=SimpleNamespace(arrivals=Counter()))


@pytest.fixture
def clock(monkeypatch) -> SteppingClock:
    clock = SteppingClock()
    monkeypatch.setattr(arrivals, "time", clock)
    monkeypatch.setattr(arrivals, "SCHEDULE_TICK_S", 0)
    return clock


def schedule(run, rate: float, pool: int, clock: SteppingClock, ticks: int) -> list[float]:
    """Let the scheduler run `ticks` turns; the due times it queued."""
    clock.ticks = ticks
    scheduler = Arrivals(run, rate, pool)
    scheduler.greenlet.join(timeout=10)
    assert scheduler.greenlet.dead and clock.readings == ticks + 1
    return [scheduler.queue.get_nowait() for _ in range(scheduler.queue.qsize())]


def test_arrivals_fall_due_at_the_rate_evenly_spaced(clock):
    due = schedule(fake_run(citizens=10), rate=16, pool=10, clock=clock, ticks=5)
    assert due == [T0 + k / 16 for k in range(1, 11)]


def test_fewer_citizens_than_the_pool_take_a_share_of_the_rate(clock):
    """While the pool is still spawning, arrivals are due in proportion to who is ready."""
    due = schedule(fake_run(citizens=5), rate=16, pool=10, clock=clock, ticks=5)
    assert due == [T0 + k * TICK_S for k in range(1, 6)]


def test_a_fraction_of_an_arrival_carries_over_to_the_next_tick(clock):
    due = schedule(fake_run(citizens=4), rate=4, pool=4, clock=clock, ticks=6)  # 0.5 a tick
    assert due == [T0 + 2 * TICK_S, T0 + 4 * TICK_S, T0 + 6 * TICK_S]


def test_arrivals_beyond_the_backlog_are_missed(clock, monkeypatch):
    monkeypatch.setattr(arrivals, "ARRIVAL_BACKLOG", 3)
    run = fake_run(citizens=10)
    due = schedule(run, rate=16, pool=10, clock=clock, ticks=5)
    assert len(due) == 3 and run.probes.arrivals == Counter({"missed": 7})


def test_a_run_s_rate_and_pool_come_from_its_scenario_and_scales(tmp_path):
    path = tmp_path / "open.yml"
    path.write_text("scenario: open\ncitizens: {template: students, count: 1, "
                    "behavior: {patience: 5s}}\nload_profile: {arrival_rate: 20/s, sustain: 1m}\n")
    scenario = load_scenario(path)
    run = SimpleNamespace(scenario=scenario, time_scale=0.5, user_scale=2.0, **vars(fake_run(0)))
    scheduler = Arrivals.for_run(run)
    scheduler.stop()
    assert scheduler.rate == 20 * 2.0 / 0.5
    assert scheduler.pool == open_model_pool(scenario, 0.5, 2.0)
