"""Bounded counts of what a target says: at most N distinct values, the rest as "other".

Routes, legal-block reasons, error texts and status texts come from the target, which
may send a new one with every response. Each kind is counted in a `CappedCounts`: it
holds at most `DISTINCT_VALUES_MAX` distinct values (in each Locust process and in the
master's merged tally), each cut to `VALUE_CHARS_MAX` characters, and counts the rest
together as "other": how many responses, and about how many distinct values they had.

That second number comes from a HyperLogLog sketch (Apache DataSketches, 4 KB, ~1.6%
relative error; exact while few values were folded): counting distinct values exactly
would mean keeping them all, the very memory this module exists to bound. Sketches of
several processes merge without double-counting a value folded in both.
"""

from __future__ import annotations

import datasketches

DISTINCT_VALUES_MAX = 1_000  # distinct values of one kind kept, per process and per run
VALUE_CHARS_MAX = 200  # characters of one value kept; longer ones end in CUT_MARK
CUT_MARK = "…[cut]"
OTHER = "other"
_SKETCH_LG_K = 12  # 2**12 registers: 4 KB a sketch, relative standard error 1.6%


def clip(text: str) -> str:
    """A value from the target, cut visibly to VALUE_CHARS_MAX characters."""
    if len(text) <= VALUE_CHARS_MAX:
        return text
    return text[:VALUE_CHARS_MAX - len(CUT_MARK)] + CUT_MARK


def other_label(distinct: int, exact: bool = True) -> str:
    """How a report names the values it folded: "other (1,234 distinct)", "≈" if estimated."""
    return f"{OTHER} ({'' if exact else '≈'}{distinct:,} distinct)"


def no_other() -> dict:
    return {"count": 0, "distinct": 0, "distinct_exact": True}


def top_and_other(counts, folded: dict | None, limit: int, value_of=lambda key: key
                  ) -> tuple[list[tuple], dict]:
    """The `limit` most frequent of (key, count) pairs, and "other": what was folded before
    plus the pairs left out. Its distinct values add up those of both, so a value both
    folded and left out here is counted twice (the figure is an upper estimate then)."""
    ranked = sorted(counts, key=lambda pair: (-pair[1], str(pair[0])))
    kept, rest = ranked[:limit], ranked[limit:]
    folded = folded or no_other()
    other = {"count": folded["count"] + sum(n for _, n in rest),
             "distinct": folded["distinct"] + len({value_of(key) for key, _ in rest}),
             "distinct_exact": folded["distinct_exact"]}
    other["label"] = other_label(other["distinct"], other["distinct_exact"])
    return kept, other


class CappedCounts:
    """Counts by key (a tuple; the target's value in it already clipped) for at most
    `limit` distinct keys. When a new key finds it full, the less frequent half is folded
    into "other", so values that keep coming stay while one-offs make room for others.
    "Distinct" counts the target's values: the key's part at `value_index`."""

    def __init__(self, value_index: int = 0, limit: int = DISTINCT_VALUES_MAX):
        self.value_index = value_index
        self.limit = limit
        self.counts: dict[tuple, int] = {}
        self.other = 0  # occurrences of the keys folded
        self._folded: datasketches.hll_union | None = None  # their distinct keys, sketched

    def add(self, key: tuple, n: int = 1) -> None:
        # On the request path: one dictionary look-up in the usual case.
        counts = self.counts
        if key in counts:
            counts[key] += n
            return
        if len(counts) >= self.limit:
            counts = self._make_room()
        counts[key] = n

    def _make_room(self) -> dict:
        ranked = sorted(self.counts.items(), key=lambda item: -item[1])  # stable: older first
        keep = self.limit // 2
        self.counts = dict(ranked[:keep])
        for key, n in ranked[keep:]:
            self._fold(key, n)
        return self.counts

    def _fold(self, key: tuple, n: int) -> None:
        self.other += n
        if self._folded is None:
            self._folded = datasketches.hll_union(_SKETCH_LG_K)
        self._folded.update(str(key[self.value_index]))

    @property
    def other_distinct(self) -> tuple[int, bool]:
        """About how many distinct keys were folded, and whether that number is exact."""
        if self._folded is None:
            return 0, True
        estimate = self._folded.get_estimate()
        # Few keys are kept as a list in the sketch: its bounds then agree.
        exact = self._folded.get_upper_bound(1) - self._folded.get_lower_bound(1) < 1
        return round(estimate), exact

    def wire(self) -> dict:
        """msgpack-safe: keys as lists, the sketch as bytes."""
        return {"counts": [[*key, n] for key, n in self.counts.items()], "other": self.other,
                "sketch": None if self._folded is None
                else self._folded.get_result().serialize_compact()}

    def merge(self, wire: dict) -> None:
        for *key, n in wire["counts"]:
            self.add(tuple(key), n)
        self.other += wire["other"]
        if wire["sketch"] is not None:
            if self._folded is None:
                self._folded = datasketches.hll_union(_SKETCH_LG_K)
            self._folded.update(datasketches.hll_sketch.deserialize(wire["sketch"]))

    def ranked(self) -> list[tuple[tuple, int]]:
        """The kept keys, most frequent first (ties by key, for stable files)."""
        return sorted(self.counts.items(), key=lambda item: (-item[1], str(item[0])))

    def folded(self) -> dict:
        """What "other" holds, as a run directory keeps it."""
        if not self.other:
            return no_other()
        distinct, exact = self.other_distinct
        return {"count": self.other, "distinct": distinct, "distinct_exact": exact}


class Samples:
    """One sample value (the first seen) for each key of a CappedCounts: a failing request's
    trace id for each kind of error. Kept only for keys the counts hold, so there are never
    more than their limit."""

    def __init__(self, counts: CappedCounts):
        self.counts = counts
        self.values: dict[tuple, str] = {}

    def add(self, key: tuple, value: str) -> None:
        """After `counts.add(key)` (a key it folded at once gets no sample)."""
        values = self.values
        kept = self.counts.counts
        if key in values or key not in kept:
            return
        if len(values) >= self.counts.limit:  # forget the samples of keys folded into "other"
            values = self.values = {k: v for k, v in values.items() if k in kept}
        values[key] = value

    def get(self, key: tuple) -> str | None:
        return self.values.get(key)

    def wire(self) -> list[list]:
        """msgpack-safe: [*key, value] rows."""
        return [[*key, value] for key, value in self.values.items()]

    def merge(self, wire: list[list]) -> None:
        """After `counts.merge()` of the same report."""
        for *key, value in wire:
            self.add(tuple(key), value)
