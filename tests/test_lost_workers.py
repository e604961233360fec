"""The master's ledger of its workers (esr/engine/lost_workers.py): what it hears, and the bound
on the requests a lost worker took with it.

test_multihost.py checks the bound against what a target received from a worker killed, cut
off, or cut from its master only; here each rule is checked on its own, at moments chosen
exactly. Worker clocks (monotonic) and the master's (epoch) differ on purpose.
"""

from __future__ import annotations

import math

import pytest

from esr.engine.lost_workers import (
    ACK_GRACE_S,
    EXCESS_SIGMAS,
    RATE_MARGIN,
    WATCH_INTERVAL_S,
    WATCH_INTERVALS_PER_VERDICT,
    Report,
    WorkerLedger,
    sending_after_last_report_s,
    silence_limit_s,
    starts_at_most,
)
from esr.run_directory import iso_at

T0 = 1_800_000_000.0  # the master's clock
W0 = 5_000.0  # the worker's
REPORT_S = 3.0
SENDING_S = sending_after_last_report_s(REPORT_S)  # a cut-off worker's, after its last report
OFFSET = T0 - W0 + 0.002  # master's clock - worker's: reports take 2 ms to arrive


def report(at: float, started: int, citizens: int = 10, in_flight: int = 0,
           requests: int | None = None, acked: tuple | None = None) -> Report:
    """A report drained at worker time W0 + at."""
    return Report(sent_at=W0 + at, started=started, in_flight=in_flight,
                  requests=started if requests is None else requests, citizens=citizens,
                  acked=acked)


def hear(ledger: WorkerLedger, worker: str, at: float, started: int, **kwargs) -> None:
    """A report drained at W0 + at, received 2 ms later, its previous ack returned with it."""
    ledger.heard(worker, T0 + at + 0.002, report(at, started, acked=(
        T0 + at - REPORT_S + 0.003, W0 + at - REPORT_S + 0.004), **kwargs))


def test_a_cut_off_worker_sends_for_its_silence_limit_and_a_few_watches_after_its_last_report():
    assert silence_limit_s(REPORT_S) == REPORT_S + ACK_GRACE_S
    assert SENDING_S == REPORT_S + ACK_GRACE_S + WATCH_INTERVALS_PER_VERDICT * WATCH_INTERVAL_S


def test_reports_keep_the_busiest_rate_of_starts_per_citizen_by_the_worker_s_clock():
    ledger = WorkerLedger(REPORT_S)
    ledger.hello("w1", T0)
    ledger.heard("w1", T0 + 1, report(0, 0))
    ledger.heard("w1", T0 + 9, report(2, 40))  # 2 s apart by the worker's clock: 2 a second
    assert ledger.records["w1"].peak_rate_per_citizen == 2.0
    ledger.heard("w1", T0 + 9.5, report(4, 100))  # busier: 5 (the master's clock is not used)
    ledger.heard("w1", T0 + 12, report(6, 20))  # quieter: the peak stays
    record = ledger.records["w1"]
    assert (record.peak_rate_per_citizen, record.citizens, record.last_heard) == (5.0, 10, T0 + 12)
    assert record.reported == 160
    ledger.hello("w1", T0 + 13)  # a repeated hello forgets nothing
    assert ledger.records["w1"] is record and record.last_heard == T0 + 12


def test_a_rate_is_per_the_fewer_citizens_of_a_report_s_two_ends():
    """Citizens spawned during an interval sent little of it: dividing by the many would
    underestimate the rate of the few that ran throughout, and so the bound."""
    ledger = WorkerLedger(REPORT_S)
    ledger.heard("w1", T0, report(0, 0, citizens=2))  # a report before the hello starts a record
    ledger.heard("w1", T0 + 2, report(2, 40, citizens=20))
    assert ledger.records["w1"].peak_rate_per_citizen == 40 / 2 / 2
    ledger.heard("w1", T0 + 4, report(4, 60, citizens=3))  # most stopped: the 3 that ran on
    assert ledger.records["w1"].peak_rate_per_citizen == 60 / 2 / 3


def test_reports_with_no_starts_or_no_time_between_them_change_no_rate():
    ledger = WorkerLedger(REPORT_S)
    ledger.heard("w1", T0, report(0, 0))
    ledger.heard("w1", T0 + 2, report(2, 0))
    ledger.heard("w1", T0 + 2, report(2, 50))  # same instant: no rate to take
    assert ledger.records["w1"].peak_rate_per_citizen == 0.0
    ledger.heard("w1", T0 + 3, Report(W0 + 3, 5, -1, 5, citizens=-1))
    assert ledger.records["w1"].citizens == ledger.records["w1"].in_flight == 0


def test_acks_returned_place_the_worker_s_clock_no_later_than_it_can_be():
    """An ack sent at master time M and received at worker time R says offset >= M - R; the
    latest bound is the greatest."""
    ledger = WorkerLedger(REPORT_S)
    ledger.heard("w1", T0, report(0, 0))
    ledger.heard("w1", T0 + 3, report(3, 30, acked=(T0 + 0.01, W0 + 0.05)))  # a slow ack
    assert ledger.records["w1"].clock_offset == pytest.approx(T0 - W0 - 0.04)
    ledger.heard("w1", T0 + 6, report(6, 30, acked=(T0 + 3.01, W0 + 3.012)))  # a quick one
    assert ledger.records["w1"].clock_offset == pytest.approx(T0 - W0 - 0.002)
    ledger.heard("w1", T0 + 9, report(9, 30, acked=(T0 + 6.01, W0 + 6.5)))  # slower: kept
    assert ledger.records["w1"].clock_offset == pytest.approx(T0 - W0 - 0.002)


def run_for(ledger: WorkerLedger, worker: str = "w1", citizens: int = 10,
            pace: float = 8.0) -> float:
    """Reports every REPORT_S s at `pace` starts per second per citizen; the last one's
    worker-clock offset from W0."""
    ledger.hello(worker, T0)
    at = 0.0
    hear(ledger, worker, at, 0, citizens=citizens)
    for _ in range(4):
        at += REPORT_S
        hear(ledger, worker, at, round(pace * citizens * REPORT_S), citizens=citizens,
             in_flight=2)
    return at


def test_a_worker_cut_off_is_bounded_by_its_peak_rate_until_it_stopped_itself():
    ledger = WorkerLedger(REPORT_S)
    last = run_for(ledger)  # 80 starts a second
    # However late the master calls it missing, the worker stopped SENDING_S after its report.
    for noticed in (8.5, 30.0):
        ledger.lost.clear()
        entry = ledger.lose("w1", T0 + last + noticed, "missed heartbeats")
        expected = RATE_MARGIN * 80 * SENDING_S
        assert entry == {
            "worker": "w1", "at": iso_at(T0 + last + noticed), "reason": "missed heartbeats",
            "last_report_at": iso_at(T0 + last + 0.002), "citizens": 10,
            "unreported_max": 2 + math.ceil(expected) + 10,  # in flight, rate, one per citizen
            "sending_window_s": round(SENDING_S, 3), "sending_ended_by": "silence",
            "requests_reported": 4 * 240}


def test_a_worker_whose_connection_closed_is_bounded_up_to_that_moment():
    ledger = WorkerLedger(REPORT_S)
    last = run_for(ledger)
    ledger.disconnected("w1", T0 + last + 1.5)  # killed 1.5 s after its last report's drain
    entry = ledger.lose("w1", T0 + last + 9.5, "missed heartbeats")
    window = entry["sending_window_s"]
    # The window reaches back to the report's drain through the worst clock offset seen
    # (2 ms): never shorter than the real 1.5 s.
    assert entry["sending_ended_by"] == "disconnected" and 1.5 <= window <= 1.51
    expected = RATE_MARGIN * 80 * window
    assert entry["unreported_max"] == 2 + math.ceil(expected) + 10  # 3 sigmas > 10 citizens
    assert entry["unreported_max"] < 2 + expected + 3 * math.sqrt(expected)


def test_a_connection_closed_later_than_the_silence_stop_changes_nothing():
    ledger = WorkerLedger(REPORT_S)
    last = run_for(ledger)
    ledger.disconnected("w1", T0 + last + SENDING_S + 5)
    entry = ledger.lose("w1", T0 + last + 20, "missed heartbeats")
    assert entry["sending_ended_by"] == "silence" and entry["sending_window_s"] == round(
        SENDING_S, 3)


def test_a_closed_connection_is_forgotten_when_the_worker_speaks_again():
    ledger = WorkerLedger(REPORT_S)
    last = run_for(ledger)
    ledger.disconnected("w1", T0 + last + 0.5)
    ledger.reconnected("w1")
    assert ledger.lose("w1", T0 + last + 9, "missed heartbeats")["sending_ended_by"] == "silence"
    ledger = WorkerLedger(REPORT_S)
    last = run_for(ledger)
    ledger.disconnected("w1", T0 + last + 0.5)
    hear(ledger, "w1", last + REPORT_S, 240)  # a report over a new connection
    assert ledger.records["w1"].disconnected_at is None


def test_without_an_ack_returned_a_closed_connection_cannot_be_placed():
    ledger = WorkerLedger(REPORT_S)
    ledger.heard("w1", T0, report(0, 0))
    ledger.heard("w1", T0 + 3, report(3, 240))  # no ack came back yet
    ledger.disconnected("w1", T0 + 3.5)
    assert ledger.lose("w1", T0 + 12, "missed heartbeats")["sending_ended_by"] == "silence"


def test_the_bound_holds_for_a_worker_that_sends_at_its_peak_until_it_stops():
    """A worker reports every 3 s at a varying pace, then is cut off (or killed): it starts
    requests at most at its busiest pace until it stops (or dies). What the target can have
    counted unreported - those in flight at its last report and those started since - is
    within the bound, whenever in the interval it happens."""
    paces = [1.0, 4.0, 2.5, 4.0, 3.0]  # requests a second per citizen, interval by interval
    citizens, in_flight = 12, 5
    for ended_after in (0.05, 1.0, 2.9, None):  # killed that long after its last report, or cut
        ledger = WorkerLedger(REPORT_S)
        ledger.hello("w1", T0)
        hear(ledger, "w1", 0, 0, citizens=citizens)
        at = 0.0
        for pace in paces:
            at += REPORT_S
            hear(ledger, "w1", at, round(pace * citizens * REPORT_S), citizens=citizens,
                 in_flight=in_flight)
        window = SENDING_S if ended_after is None else ended_after
        if ended_after is not None:  # the master sees the connection close a moment later
            ledger.disconnected("w1", T0 + at + ended_after + 0.003)
        # Its pace rises past the busiest seen, by as much as the margin allows.
        sent_unreported = in_flight + RATE_MARGIN * max(paces) * citizens * window
        entry = ledger.lose("w1", T0 + at + 9, "missed heartbeats")
        assert sent_unreported <= entry["unreported_max"], ended_after


def test_the_excess_over_a_rate_is_a_few_deviations_and_at_most_one_per_citizen():
    assert starts_at_most(0, 10) == starts_at_most(-1, 10) == 0
    assert starts_at_most(4.0, 100) == 4 + math.ceil(EXCESS_SIGMAS * 2)
    assert starts_at_most(4.0, 3) == 4 + 3  # no citizen starts two requests more than its rate
    assert starts_at_most(10_000.0, 1_000) == 10_000 + math.ceil(EXCESS_SIGMAS * 100)


def test_a_worker_that_never_reported_takes_the_busiest_rate_of_its_peers_and_its_dispatch():
    ledger = WorkerLedger(REPORT_S)
    run_for(ledger, "w1", pace=8.0)
    ledger.hello("w2", T0 + 1)
    ledger.assigned("w2", 10)  # the master gave it 10 citizens; it was lost before reporting
    entry = ledger.lose("w2", T0 + 11, "missed heartbeats")
    window = 10 + SENDING_S  # from its hello, by the master's clock
    assert entry["citizens"] == 10 and entry["sending_window_s"] == round(window, 3)
    assert entry["unreported_max"] == 10 + starts_at_most(RATE_MARGIN * 8.0 * 10 * window, 10)


def test_a_worker_is_lost_once_and_the_run_s_bound_is_the_sum():
    ledger = WorkerLedger(REPORT_S)
    run_for(ledger, "w1", pace=4.0)
    run_for(ledger, "w2", pace=8.0)
    first = ledger.lose("w1", T0 + 20, "missed heartbeats")
    assert ledger.lose("w1", T0 + 25, "no final report") is None  # once, with its first reason
    assert ledger.lost["w1"] is first and first["reason"] == "missed heartbeats"
    second = ledger.lose("w2", T0 + 20, "no final report")
    assert second["unreported_max"] > first["unreported_max"]
    assert ledger.unreported_max == first["unreported_max"] + second["unreported_max"]


def test_reports_after_the_loss_count_in_what_it_reported():
    ledger = WorkerLedger(REPORT_S)
    last = run_for(ledger)
    entry = ledger.lose("w1", T0 + last + 9, "no final report")
    hear(ledger, "w1", last + 1, 33)  # its final report, late
    assert ledger.entries() == [entry] and entry["requests_reported"] == 4 * 240 + 33


def test_a_worker_never_heard_from_is_lost_with_nothing_to_bound():
    ledger = WorkerLedger(REPORT_S)
    entry = ledger.lose("ghost", T0, "no final report")
    assert entry["citizens"] == 0 and entry["unreported_max"] == 0
    assert entry["last_report_at"] == entry["at"] == iso_at(T0)
    assert WorkerLedger(REPORT_S).unreported_max == 0


def test_a_lost_worker_s_arrivals_are_what_the_others_say_it_was_given_less_what_it_settled():
    """Open model: w1 reported 30 arrivals scheduled, 28 started or dropped; the others'
    latest reports say the sharing gave it 45 (until the survivors took over): 17 went with
    it. A closed-model entry says nothing of arrivals."""
    ledger = WorkerLedger(REPORT_S)
    ledger.heard("w1", T0 + 3, Report(W0 + 3, 30, 0, 30, 10, arrivals_scheduled=30,
                                      arrivals_settled=28, arrivals_given={"w1": 30, "w2": 29}))
    ledger.heard("w2", T0 + 6, Report(W0 + 6, 30, 0, 30, 10, arrivals_given={"w1": 44}))
    ledger.heard("w2", T0 + 9, Report(W0 + 9, 30, 0, 30, 10, arrivals_given={"w1": 45}))
    ledger.heard("w3", T0 + 9, Report(W0 + 9, 30, 0, 30, 10, arrivals_given={"w1": 40}))
    ledger.lose("w1", T0 + 12, "missed heartbeats")
    (entry,) = ledger.entries()
    assert entry["arrivals"] == {"given": 45, "scheduled": 30, "settled": 28, "lost": 17}
    closed = WorkerLedger(REPORT_S)
    run_for(closed)
    closed.lose("w1", T0 + 60, "missed heartbeats")
    assert "arrivals" not in closed.entries()[0]
    # With no other report (every worker lost), its share is at least what it scheduled.
    alone = WorkerLedger(REPORT_S)
    alone.heard("w1", T0 + 3, Report(W0 + 3, 30, 0, 30, 10, arrivals_scheduled=30,
                                     arrivals_settled=28))
    assert alone.arrivals_of("w1") == {"given": 30, "scheduled": 30, "settled": 28, "lost": 2}
    ledger.new_run()  # the web UI's next run starts afresh
    assert ledger.lost == {} and ledger.arrivals_of("w1") is None
    assert ledger.records["w1"].reported == 0


def test_an_open_model_worker_is_bounded_by_its_own_pace_not_per_citizen():
    """Open model: the pool follows the schedule (few citizens at the last report, more as
    the target slows), so the bound takes the worker's busiest pace, with no cap per citizen."""
    ledger = WorkerLedger(REPORT_S)
    for n, at in enumerate((3.0, 6.0, 9.0)):
        # 60 starts a second by 2 to 4 citizens (each took many arrivals in turn).
        ledger.heard("w1", T0 + at, Report(W0 + at, 180 if n else 0, 1, 180, 2 + n,
                                           arrivals_scheduled=180, arrivals_settled=180))
    entry = ledger.lose("w1", T0 + 20, "missed heartbeats")
    expected = RATE_MARGIN * 60 * SENDING_S
    assert entry["unreported_max"] == 1 + math.ceil(expected) + math.ceil(
        EXCESS_SIGMAS * math.sqrt(expected))
    assert starts_at_most(100.0, None) == 100 + math.ceil(EXCESS_SIGMAS * 10)
