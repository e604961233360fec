"""The open model (esr/engine/arrivals.py): its schedule, split exactly among the load
processes; in real runs against the demo target, arrivals counted exactly (started +
dropped = scheduled, and the target saw the started ones), a pool that follows the load,
and a generator that cannot keep up dropping arrivals and saying so.

test_journeys.py shows an overloaded target: arrivals still start on time there.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from commands import esr_locust, served

from esr.demo.process import demo_target
from esr.engine.arrivals import (
    HANDOVER_S,
    WORKERS_READY_S,
    Arrivals,
    Handover,
    Share,
    handover_instant,
    handovers_of,
    schedule,
    taker,
    wire_of,
)
from esr.engine.probes import LATE_MS_BOUNDS, lateness_key
from esr.launcher import RunSettings, run
from esr.report.render import write_report_card
from esr.report.summary import arrival_figures
from esr.run_directory import EVENTS, SUMMARY, load_processes_alive, read_events, read_json
from esr.wire import STOP_TIMEOUT_S


def test_uniform_arrivals_are_evenly_spaced_and_poisson_ones_seeded():
    assert list(schedule(10, 2.0, "uniform", seed=1)) == [k / 10 for k in range(20)]
    poisson = list(schedule(200, 10.0, "poisson", seed=7))
    assert poisson == list(schedule(200, 10.0, "poisson", seed=7))  # every process agrees
    assert poisson != list(schedule(200, 10.0, "poisson", seed=8))
    assert 1_900 < len(poisson) < 2_100 and poisson == sorted(poisson)
    gaps = [b - a for a, b in zip(poisson, poisson[1:], strict=False)]
    assert max(gaps) > 3 * min(gaps) * 100  # not evenly spaced: exponential gaps


@pytest.mark.parametrize("processes", [1, 2, 3, 7])
def test_the_processes_shares_split_the_schedule_exactly(processes):
    instants = list(schedule(97, 3.0, "poisson", seed=3))
    shares = [[at for k, at in enumerate(instants) if k % processes == share.index]
              for share in (Share(i, processes) for i in range(processes))]
    assert sorted(at for share in shares for at in share) == instants
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_without_a_handover_arrival_k_goes_to_process_k_mod_n():
    assert [taker(k, k / 10, 3, []) for k in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    assert {taker(k, 99.0, 1, []) for k in range(50)} == {0}


@pytest.mark.parametrize("spacing", ["uniform", "poisson"])
def test_after_a_handover_the_survivors_take_the_lost_share_evenly_and_keep_their_own(spacing):
    """Three processes, the second lost: from 4 s on, its arrivals go to the other two by
    turns; theirs stay theirs (a survivor that hears late never starts one another took)."""
    instants = list(enumerate(schedule(90, 10.0, spacing, seed=5)))
    handovers = [Handover(4.0, (0, 2))]
    before = [taker(k, at, 3, []) for k, at in instants]
    after = [taker(k, at, 3, handovers) for k, at in instants]
    for (_, at), was, now in zip(instants, before, after, strict=True):
        assert now == was if at < 4.0 or was != 1 else now in (0, 2)
    late = [now for (_, at), was, now in zip(instants, before, after, strict=True)
            if at >= 4.0]
    assert 1 not in late
    assert abs(late.count(0) - late.count(2)) <= 1  # an exact split again


def test_handovers_in_turn_leave_every_arrival_to_one_survivor_and_split_evenly():
    """Four processes; the second lost at 3 s, the third at 6 s (it had taken half the
    second's): from 6 s on, the first and fourth take everything, half each."""
    handovers = [Handover(3.0, (0, 2, 3)), Handover(6.0, (0, 3))]
    instants = list(enumerate(schedule(400, 12.0, "uniform", seed=1)))
    takers = [taker(k, at, 4, handovers) for k, at in instants]
    between = [t for (_, at), t in zip(instants, takers, strict=True) if 3.0 <= at < 6.0]
    last = [t for (_, at), t in zip(instants, takers, strict=True) if at >= 6.0]
    assert set(between) == {0, 2, 3} and set(last) == {0, 3}
    assert abs(between.count(2) - between.count(0)) <= 2
    assert abs(last.count(0) - last.count(3)) <= len(last) / 100


def test_a_handover_applies_from_a_whole_second_ahead_never_before_an_earlier_one():
    assert handover_instant(7.2, []) == 9.0 == 7.2 + HANDOVER_S + 0.8
    assert handover_instant(7.0, []) == 8.0
    assert handover_instant(3.0, [Handover(12.0, (0,))]) == 12.0
    handovers = [Handover(5.0, (0, 2)), Handover(9.0, (2,))]
    assert handovers_of(wire_of(handovers)) == handovers


class _Run:
    """What Arrivals asks of its run, without a runner (its greenlets never run here)."""

    def __init__(self):
        self.probes = type("Probes", (), {"arrivals": {"scheduled": 0, "missed": 0}})()


def _judged_until(arrivals: Arrivals, until_s: float) -> None:
    """Judge the schedule's arrivals up to `until_s`, as the process's walk does at their
    instants."""
    while (arrival := arrivals._next()) is not None and arrival[1] < until_s:
        arrivals._judge(*arrival)


def test_a_survivor_that_hears_of_a_handover_late_drops_what_it_missed_and_counts_it():
    """Two processes of three hear of the second's loss, handed over from 4 s: one in time,
    one only at 6.5 s (its loop stalled). Both count what each process was given alike;
    the late one drops the arrivals it should have taken meanwhile, counted scheduled."""
    handovers = [Handover(4.0, (0, 2))]
    on_time, late = (Arrivals(_Run(), 50, 10.0, "poisson", 3, Share(0, 3), 100)
                     for _ in range(2))
    try:
        on_time.hand_over(handovers)
        _judged_until(on_time, 6.5)
        _judged_until(late, 6.5)
        late.hand_over(handovers)
        assert late.given == on_time.given and late.handovers == handovers
        missed = sum(1 for k, at in enumerate(schedule(50, 10.0, "poisson", 3))
                     if 4.0 <= at < 6.5 and k % 3 == 1 and taker(k, at, 3, handovers) == 0)
        assert missed > 10
        assert late.run.probes.arrivals == {"scheduled": missed, "missed": missed}
        late.hand_over(handovers)  # heard again (a joiner's welcome): nothing more
        assert late.run.probes.arrivals["scheduled"] == missed
    finally:
        for arrivals in (on_time, late):
            arrivals.greenlet.kill()
            for watch in arrivals._watches:
                watch.kill()


def test_lateness_percentiles_are_read_from_its_buckets():
    counts = {"scheduled": 103, "on_time": 90, "late": 10, "missed": 3,
              lateness_key(0.4): 90, lateness_key(4.0): 8, lateness_key(400.0): 2}
    assert lateness_key(0.4) == f"late_ms_le_{LATE_MS_BOUNDS[0]}"
    assert lateness_key(400.0) == "late_ms_over"
    figures = arrival_figures(counts)
    assert (figures["started"], figures["dropped"]) == (100, 3)
    assert (figures["late_ms_p50"], figures["late_ms_p99"]) == (1.0, None)  # p99 beyond 100
    within = {**counts, "late_ms_over": 0, lateness_key(4.0): 10}
    assert arrival_figures(within)["late_ms_p99"] == 5.0
    # A bucket bounds its percentile from above, and so does the largest lateness seen.
    assert arrival_figures({**within, "late_ms_max": 3.14})["late_ms_p99"] == 3.14
    assert arrival_figures({**within, "late_ms_max": 7.5})["late_ms_p99"] == 5.0
    assert figures["lost_with_workers"] == 0 and figures["scheduled"] == 103


def test_a_lost_worker_s_whole_share_is_scheduled_and_what_it_did_not_settle_lost_with_it():
    """Its reports counted 40 scheduled, 35 started or dropped; the sharing had given it 70
    by the handover: 70 scheduled, 35 lost with it."""
    counts = {"scheduled": 240, "on_time": 230, "late": 0, "missed": 5}
    lost = [{"worker": "w1", "arrivals": {"given": 70, "scheduled": 40, "settled": 35,
                                          "lost": 35}},
            {"worker": "w2"}]  # a closed-model entry says nothing of arrivals
    figures = arrival_figures(counts, lost)
    assert figures["scheduled"] == 270 == figures["started"] + figures["dropped"] + \
        figures["lost_with_workers"]
    assert figures["lost_with_workers"] == 35


def open_scenario(tmp_path, profile: str) -> object:
    path = tmp_path / "open.yml"
    path.write_text("esr: 1\nscenario: open model\nseed: 4\n"
                    "citizens: {template: students, count: 1, behavior: {retries: 0}}\n"
                    f"load_profile: {profile}\nreport: {{formats: [json]}}\n")
    return path


def test_two_workers_start_every_arrival_once_on_time_with_a_pool_that_follows_the_load(
        tmp_path, target):
    """100/s for 6 s on a fast target: the first 15 citizens are more than the load needs, so
    idle ones retire; every arrival scheduled was started or dropped, and the target saw
    exactly the started ones."""
    citizens = []
    result = run(RunSettings(scenario=open_scenario(tmp_path, "{arrival_rate: 100/s, "
                                                              "sustain: 7s}"),
                             host=target, workers=2, run_dir=tmp_path / "run"),
                 on_progress=lambda live: citizens.append(live["citizens"]))
    arrivals = result.summary["arrivals"]
    assert arrivals["started"] + arrivals["dropped"] == arrivals["scheduled"] > 600
    # A few drop when the machine is busy (the suite runs four at once on two cores).
    assert arrivals["dropped"] <= arrivals["scheduled"] / 10, arrivals
    assert arrivals["started"] == served(target, result.run_id)["requests"]["total"] == \
        result.summary["citizens"]["total"]
    assert arrivals["late_ms_max"] < 150, arrivals  # beyond DROP_AFTER_S, an arrival drops
    # Each worker took its half of one schedule that began at the master's start.
    shares = [p["arrivals_scheduled"] for p in result.summary["load_generator"]["processes"]
              if p["process"] != "master"]
    assert len(shares) == 2 and sum(shares) == arrivals["scheduled"]
    # Apart by a few at most: a worker so starved it was not ready when the schedule began
    # drops what fell due meanwhile, its share all the same (benchmarks/open_model.py
    # measures the split on a quiet machine: 0.02%).
    assert abs(shares[0] - shares[1]) <= max(2, arrivals["scheduled"] / 50), shares
    # 15 to start with; retired down to a few spare once idle for 5 s.
    assert max(citizens) <= 30 and min(citizens[-3:]) <= 10, citizens


@pytest.mark.slow(reason="three workers for 16 s, one killed, the target's pace sampled")
def test_a_killed_worker_s_arrivals_go_to_the_survivors_and_every_one_is_counted(tmp_path,
                                                                                target):
    """60 arrivals a second on 3 workers, one killed (SIGKILL) 2.5 s in. Its connection
    closes: from an instant the master sets a couple of seconds later (or after Locust's
    8 missed heartbeats, if it hears of the close late), the two others take its arrivals
    and the target gets the schedule's pace again. scheduled = started + dropped +
    lost_with_workers, all of the schedule; the target saw every request the report counts,
    and at most lost_with_workers more."""
    # Long enough for Locust's missed heartbeats too: on a busy machine the master may hear
    # of the closed connection late, and the heartbeats decide.
    rate, sustain = 60, 16
    killed: list[float] = []
    served_at: list[tuple[float, int]] = []  # (when, requests the target has seen)

    def kill_one_then_watch(live: dict) -> None:
        if not killed and live["workers"] == 3 and live["elapsed_s"] >= 2.5:
            worker = next(load_processes(tmp_path / "run", lambda r: r.startswith("worker")))
            worker.kill()  # no goodbye, no final report
            killed.append(time.time())
        served_at.append((time.time(), served(target, live["run_id"])["requests"]["total"]))

    result = run(RunSettings(scenario=open_scenario(
        tmp_path, f"{{arrival_rate: {rate}/s, sustain: {sustain}s}}"), host=target, workers=3,
        run_dir=tmp_path / "run"), on_progress=kill_one_then_watch)
    summary, events = result.summary, read_events(tmp_path / "run")
    (lost,) = summary["lost"]["workers"]
    (handover,) = [e for e in events if e["event"] == "arrivals_handed_over"]
    assert handover["worker"] == lost["worker"] and len(handover["to"]) == 2
    started_s = next(_epoch(e["at"]) for e in events if e["event"] == "test_start")
    handed_over_at = started_s + WORKERS_READY_S + handover["from_s"]
    ended_at = started_s + sustain

    def pace(since: float, until: float) -> float:
        """Requests a second the target received between two moments (its samples)."""
        (t0, n0), (t1, n1) = [next((t, n) for t, n in served_at if t >= moment)
                              for moment in (since, until - 0.5)]
        return (n1 - n0) / (t1 - t0)

    assert killed[0] + HANDOVER_S <= handed_over_at < ended_at - 2
    assert 0.85 * rate < pace(handed_over_at + 0.5, ended_at) < 1.15 * rate  # taken over
    arrivals = summary["arrivals"]
    assert arrivals["scheduled"] == arrivals["started"] + arrivals["dropped"] + \
        arrivals["lost_with_workers"]
    # The whole schedule but what fell due once the run stopped (it began half a second
    # after the run's clock, WORKERS_READY_S).
    assert rate * (sustain - 1.5) <= arrivals["scheduled"] <= rate * sustain, arrivals
    # Its share from its last report (at most 3 s before the kill) to the handover: some 20
    # a second for at least the handover's second.
    assert rate / 3 * HANDOVER_S <= arrivals["lost_with_workers"] == \
        lost["arrivals"]["lost"] <= rate / 3 * sustain, arrivals
    assert arrivals["dropped"] <= arrivals["scheduled"] / 10, arrivals
    seen = served(target, result.run_id)["requests"]["total"]
    assert summary["requests"]["total"] <= seen <= arrivals["started"] + \
        arrivals["lost_with_workers"], (seen, arrivals)
    assert seen - summary["requests"]["total"] <= lost["unreported_max"], (seen, lost)
    # The survivors split the schedule evenly, its share included.
    shares = [p["arrivals_scheduled"] for p in summary["load_generator"]["processes"]
              if p["process"] not in ("master", lost["worker"])]
    assert len(shares) == 2 and abs(shares[0] - shares[1]) <= 5, shares
    card = write_report_card(tmp_path / "run", formats=("html",))["html"].read_text()
    assert f"{arrivals['lost_with_workers']} more went with lost workers" in card


def load_processes(run_dir: Path, role=lambda role: True):
    """The run's load processes alive whose role ("locust", "master", "worker-0"…) is
    `role`'s, found by their pid files (run_directory.py)."""
    for name, pid in load_processes_alive(run_dir).items():
        if role(name):
            with contextlib.suppress(psutil.Error):  # ended meanwhile
                yield psutil.Process(pid)


def _epoch(iso: str) -> float:
    return dt.datetime.fromisoformat(iso).timestamp()


def test_a_generator_that_cannot_keep_up_drops_arrivals_and_says_so(tmp_path, target):
    """Two citizens at most (some 250 requests a second here), 1,000 arrivals a second: most
    cannot start. They are dropped, not
    queued, so the run ends on time and the requests sent are as fast as the target."""
    result = run(RunSettings(scenario=open_scenario(
        tmp_path, "{arrival_rate: 1000/s, sustain: 3s, max_citizens: 2}"), host=target,
        workers=0, run_dir=tmp_path / "run"))
    summary = result.summary
    arrivals = summary["arrivals"]
    assert arrivals["started"] + arrivals["dropped"] == arrivals["scheduled"] > 2_500
    assert arrivals["dropped"] > arrivals["scheduled"] / 2
    assert arrivals["started"] == served(target, result.run_id)["requests"]["total"]
    assert summary["duration_s"] < 3 + 2
    assert summary["requests"]["p99_ms"] < 100
    generator = summary["load_generator"]
    assert generator["limited"] and any("arrivals could not start" in finding
                                        for finding in generator["findings"])


def test_a_generator_starved_of_cpu_drops_arrivals_and_names_itself(tmp_path, target):
    """ESR's one load process shares its core with a busy loop and is asked for 4,000
    arrivals a second (more than a whole core serves here): arrivals it cannot start in time
    are dropped and counted, not queued; the run ends on time; the target saw exactly the
    started ones; the verdict says the generator, not the target, was the limit. The busy
    loop spins from the load's start to its end (the run's test_start and test_end events),
    not through the processes' start-up and the report card: there it only burnt a core."""
    core = {max(os.sched_getaffinity(0))}
    on_the_core = lambda: os.sched_setaffinity(0, core)  # noqa: E731
    run_dir = tmp_path / "run"
    with open(tmp_path / "stdout", "w") as out, open(tmp_path / "stderr", "w") as err:
        process = subprocess.Popen(esr_locust(
            "run", str(open_scenario(tmp_path, "{arrival_rate: 4000/s, sustain: 3s}")),
            "--host", target, "--workers", "0", "--run-dir", str(run_dir)),
            preexec_fn=on_the_core, stdout=out, stderr=err)
    try:
        until_event(run_dir, "test_start", process)
        hog = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 60\n"
                                "while time.time() < end: pass"], preexec_fn=on_the_core)
        try:
            until_event(run_dir, "test_end", process)
        finally:
            hog.kill()
            hog.wait()
        process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    done = subprocess.CompletedProcess(process.args, process.returncode,
                                       (tmp_path / "stdout").read_text(),
                                       (tmp_path / "stderr").read_text())
    assert done.returncode in (0, 1), done.stderr  # 1: the scenario's SLOs may fail
    summary = read_json(run_dir / SUMMARY)
    arrivals = summary["arrivals"]
    assert arrivals["started"] + arrivals["dropped"] == arrivals["scheduled"] > 10_000
    assert arrivals["dropped"] > 0 and arrivals["late_ms_max"] < 150, arrivals
    assert arrivals["started"] == served(target, summary["run_id"])["requests"]["total"]
    assert summary["duration_s"] < 3 + STOP_TIMEOUT_S
    generator = summary["load_generator"]
    assert generator["limited"] and any("arrivals could not start" in finding
                                        for finding in generator["findings"]), generator
    assert "load generator" in done.stdout + done.stderr


def until_event(run_dir, kind: str, process: subprocess.Popen, timeout_s: float = 120) -> None:
    """Until the run directory's events name `kind` (or the process has ended)."""
    events, deadline = run_dir / EVENTS, time.monotonic() + timeout_s
    while not (events.is_file() and f'"event": "{kind}"' in events.read_text()):
        if process.poll() is not None:
            return
        assert time.monotonic() < deadline, f"no {kind} event in {timeout_s} s"
        time.sleep(0.05)


@pytest.mark.slow(reason="a pool that stays bounded shows over minutes (the issue: 20/s, 2 min)")
def test_a_long_low_rate_run_holds_the_citizens_its_concurrency_needs(tmp_path):
    """20 arrivals a second for 2 minutes, each answered in a second: some 20 citizens busy
    at a time. The pool stays near that (never one citizen per arrival: 2,400), and the load
    process's memory does not grow with the run's length."""
    samples: list[tuple[int, int]] = []  # (citizens, the load process's RSS)

    def sample(live: dict) -> None:
        rss = 0
        for process in load_processes(tmp_path / "run"):
            with contextlib.suppress(psutil.Error):  # ended meanwhile
                rss += process.memory_info().rss
        samples.append((live["citizens"], rss))

    with demo_target("--capacity", "100", "--service-ms", "1000") as slow:
        result = run(RunSettings(scenario=open_scenario(
            tmp_path, "{arrival_rate: 20/s, sustain: 120s}"), host=slow, workers=0,
            run_dir=tmp_path / "run"), on_progress=sample)
        arrivals = result.summary["arrivals"]
        # All 2,400 but those due once the run stopped: its clock started as the citizens did,
        # the schedule once they were ready (arrivals.py, Arrivals.end).
        assert arrivals["started"] + arrivals["dropped"] == arrivals["scheduled"]
        assert 2_390 <= arrivals["scheduled"] <= 2_400, arrivals
        assert arrivals["dropped"] <= 24, arrivals  # a busy machine may drop a few
        assert arrivals["started"] == served(slow, result.run_id)["requests"]["total"]
    assert result.summary["requests"]["p50_ms"] >= 1000
    citizens = [c for c, _ in samples]
    assert len(samples) > 100 and 15 <= max(citizens) <= 45, citizens
    # Memory a minute in against the end: the same, within what Python's allocator wanders.
    minute, end = samples[len(samples) // 2][1], max(rss for _, rss in samples[-10:])
    assert minute > 0 and end - minute < 8 * 2**20, (minute, end)
