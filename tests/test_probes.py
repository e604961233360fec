"""Probes: aggregation that merges exactly and percentiles that agree with HDR's own."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
from hdrh.histogram import HdrHistogram

from esr.bounded import CappedCounts, Samples
from esr.engine.probes import OTHER_ENDPOINTS, Probes, Tally
from esr.histograms import merged, new_histogram, percentile_ms


def test_fast_percentiles_equal_hdr_own_after_encoding_and_merging():
    rng = np.random.default_rng(3)
    parts = []
    for _ in range(8):
        histogram = new_histogram()
        for value in rng.lognormal(rng.uniform(5, 12), rng.uniform(0.2, 2), 2000).astype(int):
            histogram.record_value(max(int(value), 1))
        parts.append(histogram)
    reference = new_histogram(word_size=8)
    for part in parts:
        reference.add(part)
    total = merged(HdrHistogram.decode(part.encode()) for part in parts)
    assert total.total_count == reference.total_count == 16_000
    for q in (0.1, 50, 90, 95, 99, 99.9, 100):
        assert percentile_ms(total, q) == reference.get_value_at_percentile(q) / 1000


def test_drained_data_survives_msgpack_and_merges_exactly():
    """Worker reports are msgpack: a set or a date in them would silently stop reporting."""
    tally = Tally()
    expected = 0
    for _ in range(3):
        probes = Probes(bucket_s=5.0)
        for i in range(1000):
            probes.request("apply", 1_800_000_000 + i / 100, 10.0 + i % 50, None,
                           {"route": "standard", "paused": i % 10 == 0}, ("62+", True))
            probes.journey("seniors", "62+", True, "approved", i % 7 == 0)
        probes.request("apply", 1_800_000_030, 99.0, "HTTP 503", {}, ("62+", False))
        expected += 1001
        wire = msgpack.unpackb(msgpack.packb(probes.drain()), strict_map_key=False)
        tally.merge(wire)
        assert probes.drain()["latency"] == []  # drained means forgotten
    assert tally.requests == expected and tally.failures == 3
    assert tally.routes.counts[("standard",)] == 3000 and tally.hitl["paused"] == 300
    assert tally.outcomes() == {"approved": 3000}
    assert tally.errors.counts[("apply", "HTTP 503")] == 3
    assert sum(lat.histogram.total_count for lat in tally.latency.values()) == expected


def test_live_figures_add_up_across_reports_and_fold_the_endpoints_beyond_the_limit():
    tally = Tally()
    for worker in range(2):
        probes = Probes(bucket_s=1.0, duration_bounds_ms=(2.0, 450.0))
        probes.started += 5 + worker
        for i in range(30):  # across several time buckets
            failed = i % 3 == 0
            probes.request("/eligibility", 1_800_000_000 + i / 3, 5.0,
                           "HTTP 503" if failed else None, {}, None, method="POST",
                           status=503 if failed else 200)
            probes.request("/status", 1_800_000_000 + i / 3, 1.0, None, {}, None,
                           method="GET", status=200)
        probes.request("/pay", 1_800_000_000, 1.0, "ConnectionRefusedError", {}, None,
                       method="POST", status=0)
        probes.journey("g", "62+", True, "approved", False)
        tally.merge(msgpack.unpackb(msgpack.packb(probes.drain()), strict_map_key=False))
    assert tally.started == 11
    assert tally.requests == 122 and tally.failures == 22
    live = tally.live(limit=2)
    assert {name: (e["requests"], e["failures"], e["p99_ms"]) for name, e in
            live["endpoints"].items()} == {"/eligibility": (60, 20, 5.0),
                                           "/status": (60, 0, 1.0), OTHER_ENDPOINTS: (2, 2, 1.0)}
    assert (live["overall"]["requests"], live["overall"]["max_ms"]) == (122, 5.0)
    assert live["answers"] == [[OTHER_ENDPOINTS, "POST", "none", 2],
                               ["/eligibility", "POST", "2xx", 40],
                               ["/eligibility", "POST", "5xx", 20], ["/status", "GET", "2xx", 60]]
    # Buckets: <= 2 ms, <= 450 ms, +Inf.
    assert live["durations"] == {"/eligibility": [0, 60, 0], "/status": [60, 0, 0],
                                 OTHER_ENDPOINTS: [2, 0, 0]}
    assert live["journeys"] == [["62+", True, "approved", 2]]


def test_each_kind_of_error_keeps_the_first_trace_id_merged_from_its_workers():
    tally = Tally()
    for worker in (1, 2):
        probes = Probes(bucket_s=5.0)
        probes.request("apply", 1_800_000_000, 5.0, "HTTP 503", {}, None,
                       trace_id=f"{worker:032x}")
        probes.request("apply", 1_800_000_001, 5.0, "HTTP 503", {}, None,
                       trace_id="f" * 32)
        probes.request("pay", 1_800_000_000, 5.0, "HTTP 500", {}, None)  # carried no trace
        probes.request("pay", 1_800_000_000, 5.0, None, {}, None, trace_id="e" * 32)  # ok
        tally.merge(msgpack.unpackb(msgpack.packb(probes.drain()), strict_map_key=False))
    assert tally.error_traces.values == {("apply", "HTTP 503"): f"{1:032x}"}
    assert tally.errors.counts == {("apply", "HTTP 503"): 4, ("pay", "HTTP 500"): 2}


def test_error_trace_samples_stay_within_the_cap_of_kinds():
    counts = CappedCounts(value_index=1, limit=10)
    samples = Samples(counts)
    for i in range(1_000):  # a new kind of error every time, and one that keeps coming
        for key in (("apply", f"HTTP 500 at {i}"), ("apply", "HTTP 503")):
            counts.add(key)
            samples.add(key, f"{i + 1:032x}")
        assert len(samples.values) <= counts.limit
    assert samples.get(("apply", "HTTP 503")) == f"{1:032x}"  # the first, kept throughout
    assert samples.get(("apply", "HTTP 500 at 999")) == f"{1000:032x}"
    # A master merging more kinds than it keeps: those folded at once get no sample.
    merged = Samples(CappedCounts(value_index=1, limit=10))
    for i in range(100):
        merged.counts.merge({"counts": [["apply", f"HTTP 500 at {i}", 1]], "other": 0,
                             "sketch": None})
        merged.merge([["apply", f"HTTP 500 at {i}", f"{i + 1:032x}"]])
        assert len(merged.values) <= 10 and set(merged.values) <= set(merged.counts.counts)


def test_other_wire_versions_are_refused():
    with pytest.raises(ValueError, match="wire version"):
        Tally().merge({"v": 999})


def test_values_recorded_at_once_land_where_hdr_puts_them_one_by_one():
    from esr.histograms import HDR_RANGE, record_values

    rng = np.random.default_rng(11)
    edges = [1, 2, 127, 128, 255, 256, 1023, 1024, 2**20 - 1, 2**20, 2**31, HDR_RANGE[1]]
    values = np.concatenate([edges, rng.integers(1, HDR_RANGE[1], 5000),
                             rng.lognormal(9, 2, 5000).astype(np.int64) + 1])
    one_by_one, at_once = new_histogram(), new_histogram()
    for value in values.tolist():
        one_by_one.record_value(value)
    record_values(at_once, values[: len(values) // 2])
    record_values(at_once, values[len(values) // 2:])  # into a histogram holding values
    assert list(at_once.counts) == list(one_by_one.counts)
    assert (at_once.total_count, at_once.min_value, at_once.max_value) == \
        (one_by_one.total_count, one_by_one.min_value, one_by_one.max_value)
