"""The master's ledger of its workers (esr/engine/lost_workers.py): what it hears, and the bound
on the requests a lost worker took with it.

The same arithmetic a killed or cut-off worker exercises in test_scale_out.py and
test_multihost.py, where it takes Locust 8 missed heartbeats to call a worker missing; here
each rule is checked on its own, at moments chosen exactly.
"""

from __future__ import annotations

import math

from esr.engine.lost_workers import MASTER_SILENCE_S, WATCH_INTERVAL_S, WorkerLedger
from esr.run_directory import iso_at

T0 = 1_800_000_000.0
SILENCE = MASTER_SILENCE_S + WATCH_INTERVAL_S  # what a lost worker may still send for


def test_hello_then_reports_keep_the_busiest_rate_per_citizen():
    ledger = WorkerLedger()
    ledger.hello("w1", T0)
    ledger.heard("w1", T0 + 2, requests=40, citizens=10)  # 2 a second per citizen
    assert ledger.records["w1"].peak_rate_per_citizen == 2.0
    ledger.heard("w1", T0 + 4, requests=100, citizens=10)  # busier: 5
    ledger.heard("w1", T0 + 6, requests=20, citizens=10)  # quieter: the peak stays
    record = ledger.records["w1"]
    assert (record.peak_rate_per_citizen, record.citizens, record.last_heard) == (5.0, 10, T0 + 6)
    ledger.hello("w1", T0 + 7)  # a repeated hello forgets nothing
    assert ledger.records["w1"] is record and record.last_heard == T0 + 6


def test_a_rate_is_per_the_fewer_citizens_of_a_report_s_two_ends():
    """Citizens spawned during an interval sent little of it: dividing by the many would
    underestimate the rate of the few that ran throughout, and so the bound."""
    ledger = WorkerLedger()
    ledger.heard("w1", T0, requests=0, citizens=2)  # a report before the hello starts the record
    ledger.heard("w1", T0 + 2, requests=40, citizens=20)
    assert ledger.records["w1"].peak_rate_per_citizen == 40 / 2 / 2
    ledger.heard("w1", T0 + 4, requests=60, citizens=3)  # most stopped: the 3 that ran on
    assert ledger.records["w1"].peak_rate_per_citizen == 60 / 2 / 3


def test_reports_with_no_requests_or_no_time_between_them_change_no_rate():
    ledger = WorkerLedger()
    ledger.hello("w1", T0)
    ledger.heard("w1", T0 + 2, requests=0, citizens=10)
    ledger.heard("w1", T0 + 2, requests=50, citizens=10)  # same instant: no rate to take
    assert ledger.records["w1"].peak_rate_per_citizen == 0.0
    ledger.heard("w1", T0 + 3, requests=5, citizens=-1)  # never a negative count of citizens
    assert ledger.records["w1"].citizens == 0


def test_a_lost_worker_is_bounded_by_its_peak_rate_for_as_long_as_it_could_send():
    ledger = WorkerLedger()
    ledger.hello("w1", T0)
    ledger.heard("w1", T0 + 3, requests=300, citizens=20)  # 5 a second per citizen
    entry = ledger.lose("w1", T0 + 11, "missed heartbeats")
    # Unheard for 8 s, then up to the worker's own silence limit and one watch more,
    # at its peak rate, plus one request in flight per citizen.
    unheard = 8 + SILENCE
    assert entry == {"worker": "w1", "at": iso_at(T0 + 11), "reason": "missed heartbeats",
                     "last_report_at": iso_at(T0 + 3), "citizens": 20,
                     "unreported_max": math.ceil(5 * 20 * unheard) + 20}
    assert ledger.lost == {"w1": entry} and ledger.unreported_max == entry["unreported_max"]


def test_the_bound_holds_for_a_worker_that_sends_at_its_peak_until_it_stops_itself():
    """A worker reports every 3 s at a varying pace, then is cut off: it sends on, at most at
    its busiest pace, until it has not heard the master for MASTER_SILENCE_S and stops its
    citizens (checked every WATCH_INTERVAL_S). What it sent unreported is within the bound."""
    ledger = WorkerLedger()
    ledger.hello("w1", T0)
    paces = [1.0, 4.0, 2.5, 4.0, 3.0]  # requests a second per citizen, interval by interval
    citizens, now = 12, T0
    for pace in paces:
        now += 3
        ledger.heard("w1", now, requests=round(pace * citizens * 3), citizens=citizens)
    last_report = now
    noticed = last_report + 8.5  # Locust calls it missing some heartbeats later
    sent_unreported = max(paces) * citizens * (noticed + SILENCE - last_report) + citizens
    entry = ledger.lose("w1", noticed, "missed heartbeats")
    assert sent_unreported <= entry["unreported_max"] < sent_unreported + 1


def test_a_worker_is_lost_once_and_the_run_s_bound_is_the_sum():
    ledger = WorkerLedger()
    for worker, rate in (("w1", 40), ("w2", 80)):
        ledger.hello(worker, T0)
        ledger.heard(worker, T0 + 2, requests=rate, citizens=4)
    first = ledger.lose("w1", T0 + 5, "missed heartbeats")
    assert ledger.lose("w1", T0 + 9, "no final report") is None  # once, with its first reason
    assert ledger.lost["w1"] is first and first["reason"] == "missed heartbeats"
    second = ledger.lose("w2", T0 + 5, "no final report")
    assert second["unreported_max"] > first["unreported_max"]
    assert ledger.unreported_max == first["unreported_max"] + second["unreported_max"]


def test_a_worker_never_heard_from_is_lost_with_nothing_to_bound():
    ledger = WorkerLedger()
    entry = ledger.lose("ghost", T0, "no final report")
    assert entry["citizens"] == 0 and entry["unreported_max"] == 0
    assert entry["last_report_at"] == entry["at"] == iso_at(T0)
    assert WorkerLedger().unreported_max == 0
