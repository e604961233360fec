"""ESR's latency histograms: HDR histograms of one layout, filled, merged and read in numpy.

Both worlds use them: the engine's probes record into them inside Locust's processes,
and the report builder reads them back from the run directory, where Locust must never
be imported. So hdrh's internals, which ESR reaches past its public API for speed, are
named here rather than in esr/engine/locust_compat.py (which imports Locust). Each use is
marked RELIES ON; tests/test_locust_compat.py checks each against the installed hdrh,
and locust_compat checks at import that hdrh is a version those tests passed with.
"""

from __future__ import annotations

import numpy as np
from hdrh.histogram import HdrHistogram

# Microseconds, from 1 µs to an hour; 2 significant digits keeps a histogram at ~13 KB
# and percentiles within 1% (measured 0.4% worst on lognormal latencies).
HDR_RANGE = (1, 3_600_000_000)
HDR_DIGITS = 2


def new_histogram(word_size: int = 4) -> HdrHistogram:
    """Per bucket, 32-bit counts suffice (and halve the memory); merged totals use 64."""
    return HdrHistogram(*HDR_RANGE, HDR_DIGITS, word_size=word_size)


def counts_of(histogram: HdrHistogram) -> np.ndarray:
    """The histogram's counts as a numpy array sharing its memory: writes change the histogram."""
    # RELIES ON: `counts` is a ctypes array of `counts_len` integers of `word_size` bytes, the
    # one store of the counts (record_value, encode and the percentile walk all read it).
    return np.ctypeslib.as_array(histogram.counts)


def set_totals(histogram: HdrHistogram, total_count: int, min_value: int, max_value: int) -> None:
    """After writing counts directly: the totals HDR keeps beside them."""
    # RELIES ON: total_count, min_value and max_value are plain attributes that percentiles
    # and encode() read as they are (record_value keeps them up to date itself).
    histogram.total_count = total_count
    histogram.min_value = min_value
    histogram.max_value = max_value


def merged(histograms) -> HdrHistogram:
    """Sum histograms of ESR's layout by adding their count arrays: HDR's own add() walks
    every bucket in Python when word sizes differ, as decoded ones do (2 ms a merge)."""
    total = new_histogram(word_size=8)  # 64-bit counts: a whole run may exceed 2**32
    counts = np.zeros(total.counts_len, dtype=np.uint64)
    count, low, high = 0, None, 0
    for histogram in histograms:
        if not histogram.total_count:
            continue
        counts += counts_of(histogram)[:total.counts_len].astype(np.uint64)
        low = histogram.min_value if low is None else min(low, histogram.min_value)
        high = max(high, histogram.max_value)
        count += histogram.total_count
    view = counts_of(total)
    view[:] = counts.astype(view.dtype)
    if count:
        set_totals(total, count, low, high)
    return total


def record_values(histogram: HdrHistogram, micros: np.ndarray) -> None:
    """HDR's record_value for many values at once: the same counts index for each (HDR's
    own formula, vectorised), a few microseconds per request saved on the hot path."""
    h = histogram
    micros = micros.astype(np.int64)
    # RELIES ON: HDR's index formula (_get_bucket_index, _get_sub_bucket_index, _counts_index)
    # and the layout fields it uses: sub_bucket_mask, unit_magnitude,
    # sub_bucket_half_count_magnitude, sub_bucket_half_count.
    bit_length = np.frexp((micros | h.sub_bucket_mask).astype(np.float64))[1]  # exact < 2**53
    bucket = bit_length - h.unit_magnitude - (h.sub_bucket_half_count_magnitude + 1)
    sub_bucket = micros >> (bucket + h.unit_magnitude)
    index = ((bucket + 1) << h.sub_bucket_half_count_magnitude) \
        + (sub_bucket - h.sub_bucket_half_count)
    counts = counts_of(h)
    counts += np.bincount(index, minlength=h.counts_len)[:h.counts_len].astype(counts.dtype)
    set_totals(h, h.total_count + len(micros), min(h.min_value, int(micros.min())),
               max(h.max_value, int(micros.max())))


def percentile_ms(histogram: HdrHistogram, q: float) -> float:
    """HDR's value at a percentile, in ms, found with numpy instead of a Python loop."""
    if not histogram.total_count:
        return 0.0
    # RELIES ON: get_value_at_percentile's own steps, each public only by name:
    # get_target_count_at_percentile, then the first index whose running count reaches it,
    # get_value_from_index of it, and get_highest_equivalent_value of that.
    target = histogram.get_target_count_at_percentile(q)
    cumulative = np.cumsum(counts_of(histogram), dtype=np.uint64)
    index = int(np.searchsorted(cumulative, target))
    value = histogram.get_value_from_index(min(index, histogram.counts_len - 1))
    return histogram.get_highest_equivalent_value(value) / 1000


def decoded(text: str) -> HdrHistogram:
    """A histogram from the text of its encode(), as the run directory holds it (its counts
    are 64-bit, whatever they were when encoded)."""
    return HdrHistogram.decode(text.encode("ascii"))


def add_encoded(histogram: HdrHistogram, text: str | bytes) -> None:
    """Add an encoded histogram (another process's, of ESR's layout) into this one: its count
    array added in numpy (HDR's decode_and_add walks every bucket in Python when word sizes
    differ, as a decoded histogram's do: 2 ms, in the middle of a load process's second)."""
    # RELIES ON: decode() of encode()'s text (bytes) gives a histogram of the same layout
    # with its total_count, min_value and max_value set; counts as in counts_of.
    other = HdrHistogram.decode(text.encode("ascii") if isinstance(text, str) else text)
    if not other.total_count:
        return
    counts = counts_of(histogram)
    counts += counts_of(other)[:len(counts)].astype(counts.dtype)
    set_totals(histogram, histogram.total_count + other.total_count,
               min(histogram.min_value, other.min_value),
               max(histogram.max_value, other.max_value))


# Request-duration buckets for Prometheus (its client's defaults, in ms); a scenario's latency
# SLO thresholds join them so a dashboard can tell exactly how many requests were within each.
DURATION_BUCKETS_MS = (5, 10, 25, 50, 75, 100, 250, 500, 750, 1000, 2500, 5000, 7500, 10000)
LATENCY_SLO_METRICS = ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms", "avg_ms")


def duration_bounds_ms(slo_checks) -> tuple[float, ...]:
    """The upper bounds (ms, ascending; +Inf implied) of the request-duration buckets."""
    thresholds = {float(c.threshold) for c in slo_checks if c.metric in LATENCY_SLO_METRICS}
    return tuple(sorted({float(b) for b in DURATION_BUCKETS_MS} | thresholds))


def bucket_counts(values_ms: np.ndarray, bounds_ms: tuple[float, ...]) -> np.ndarray:
    """How many values fall in each bucket (le semantics: value <= bound), the last +Inf."""
    return np.bincount(np.searchsorted(bounds_ms, values_ms, side="left"),
                       minlength=len(bounds_ms) + 1)
