"""Synthetic citizens: reproducible, fast, and the same whoever generates them.

Citizen number k of a group is a pure function of (seed, group index, k): its
numeric traits come from block k // BLOCK, drawn with numpy from a generator
seeded by (seed, group, block). Any process can therefore make any citizen,
and splitting the numbers across workers (by whole blocks) changes nothing.

Identity strings (names, streets) come from pools that Faker fills from a fixed
seed (once per machine: they are kept in the user's cache folder); a citizen picks
from them with its own draws. Calling Faker per citizen costs ~190 µs (see
benchmarks/citizens.py), far too slow for a load generator; the pools keep Faker's
realism at a fraction of the cost.
Emails use the reserved example.* domains and phones the fictional 555-01xx
exchange, so no synthetic citizen points at a real person.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import inspect
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import metadata
from pathlib import Path

import numpy as np

# Imported with this module, not by the first block of citizens made: in a load process that
# was during the load (0.5 MB and milliseconds of the event loop, numpy loading it lazily).
from numpy.random import default_rng

from esr.scenario.model import AGE_BANDS, CitizenGroup, Scenario

BLOCK = 1024
_POOL_SEED = 20260101
_POOL_SIZE = 2048
_EMAIL_DOMAINS = ("example.com", "example.org", "example.net")


@dataclass(frozen=True)
class IdentityPool:
    """Identity parts as numpy object arrays: a block picks from them with one indexing each."""

    first_names: np.ndarray
    last_names: np.ndarray
    streets: np.ndarray
    cities: np.ndarray
    zips_by_state: dict[str, tuple[str, ...]]
    email_first: np.ndarray  # the names lower-cased, as e-mail addresses have them
    email_last: np.ndarray


@cache
def identity_pool() -> IdentityPool:
    """Realistic identity parts, the same in every process: drawn from Faker with a fixed seed
    (about 0.8 s of CPU, in every Locust process that makes citizens), kept in the user's
    cache folder, and read back from there (a few milliseconds) by the next process."""
    parts = identity_parts()
    return IdentityPool(
        first_names=_strings(parts["first_names"]),
        last_names=_strings(parts["last_names"]),
        streets=_strings(parts["streets"]),
        cities=_strings(parts["cities"]),
        zips_by_state={state: tuple(zips) for state, zips in parts["zips_by_state"].items()},
        email_first=_strings(name.lower() for name in parts["first_names"]),
        email_last=_strings(name.lower() for name in parts["last_names"]),
    )


def identity_parts() -> dict:
    """The pool's strings as draw_identity_parts() draws them: from the cache file when one
    holds them, else drawn and kept there (a file no one can write is simply not kept)."""
    path = identity_cache_file()
    parts = _read_parts(path) if path else None
    if parts is None:
        parts = draw_identity_parts()
        if path is not None:
            _keep(path, parts)
    return parts


def draw_identity_parts() -> dict:
    """Names, streets, cities and ZIP codes from Faker, seeded: the same on every machine with
    the same Faker."""
    from faker import Faker

    from esr.population.presets import PRESETS

    fake = Faker("en_US")
    fake.seed_instance(_POOL_SEED)
    return {
        "first_names": [fake.first_name() for _ in range(_POOL_SIZE)],
        "last_names": [fake.last_name() for _ in range(_POOL_SIZE)],
        "streets": [fake.street_address() for _ in range(_POOL_SIZE)],
        "cities": [fake.city() for _ in range(_POOL_SIZE // 4)],
        "zips_by_state": {state: [fake.zipcode_in_state(state) for _ in range(16)]
                          for state in PRESETS["us_population"]},
    }


def identity_cache_file() -> Path | None:
    """Where the drawn parts are kept: named by Faker's version and by what draws them (this
    module's drawing code, seed and size), so a change to either draws them anew. None when
    that cannot be told (no source to read, no home folder): then they are not kept."""
    try:
        root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        drawing = f"{inspect.getsource(draw_identity_parts)}|{_POOL_SEED}|{_POOL_SIZE}"
        faker = metadata.version("faker")
    except (OSError, RuntimeError, TypeError, metadata.PackageNotFoundError):
        return None
    key = hashlib.sha256(drawing.encode()).hexdigest()[:16]
    return Path(root) / "esr-locust" / f"identity-faker-{faker}-{key}.json"


def _keep(path: Path, parts: dict) -> None:
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp",
                                         delete=False) as out:
            json.dump(parts, out)
        os.replace(out.name, path)  # whole or not at all, however many write at once


def _read_parts(path: Path) -> dict | None:
    try:
        parts = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    expected = {"first_names": _POOL_SIZE, "last_names": _POOL_SIZE, "streets": _POOL_SIZE,
                "cities": _POOL_SIZE // 4}
    if not isinstance(parts, dict) or not isinstance(parts.get("zips_by_state"), dict) or any(
            not isinstance(parts.get(key), list) or len(parts[key]) != size
            for key, size in expected.items()):
        return None  # not what draw_identity_parts() writes: draw again
    return parts


def _strings(values) -> np.ndarray:
    """Python strings in an object array: indexing and + keep them Python strings."""
    return np.array(list(values), dtype=object)


def _age_band_table() -> tuple[str, ...]:
    table = ["under-18"] * 121
    for low, high, label in AGE_BANDS:
        for age in range(low, min(high, 120) + 1):
            table[age] = label
    return tuple(table)


_BANDS = _strings(_age_band_table())  # by age
_COHORTS = _strings([[f"{band}|{kind}" for kind in ("non-veteran", "veteran")]  # by age, veteran
                     for band in _BANDS])
_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()  # numpy's day 0
# Phones "(2xx-9xx) 555-01nn" and e-mail tails "<number % 1000>@<domain number % 3>", as tables.
_PHONE_AREAS = _strings(f"({area}) 555-01" for area in range(200, 1000))
_TWO_DIGITS = _strings(f"{k:02d}" for k in range(100))
_EMAIL_TAILS = _strings(f"{k % 1000}@{_EMAIL_DOMAINS[k % 3]}" for k in range(3000))
# What every citizen has, in the order _make_block makes it.
CITIZEN_FIELDS = ("citizen_id", "number", "group", "name", "first_name", "last_name", "age",
                  "date_of_birth", "income", "veteran", "household_size", "disability",
                  "employment", "state", "zip", "address", "city", "email", "phone", "language",
                  "digital_comfort", "age_band", "cohort")
FIELD_AT = {name: at for at, name in enumerate(CITIZEN_FIELDS)}  # a field's place in a row


def citizen_of(row: tuple) -> dict:
    """A citizen as a dict of its fields, from its row (CitizenStream.next_row)."""
    return dict(zip(CITIZEN_FIELDS, row, strict=True))


class CitizenFactory:
    """Makes the citizens of one group of a scenario, by number."""

    def __init__(self, scenario: Scenario, group_index: int):
        self.group = scenario.citizens[group_index]
        self.group_index = group_index
        self.seed = scenario.seed
        self.pool = identity_pool()
        reference = scenario.reference_date
        # Born on reference - age years - up to 364 days: exactly `age` on the reference date.
        self._anchor = np.array([_years_before(reference, age).toordinal() for age in range(121)])

    def citizen(self, number: int) -> dict:
        block, offset = divmod(number, BLOCK)
        return dict(zip(CITIZEN_FIELDS, self._rows(block)[offset], strict=True))

    def block(self, block: int) -> list[dict]:
        return [dict(zip(CITIZEN_FIELDS, row, strict=True)) for row in self._rows(block)]

    def stream(self, share: int = 0, shares: int = 1) -> CitizenStream:
        """The citizens of one share of many: whole blocks, dealt round-robin, without end."""
        return CitizenStream(self, share, shares)

    @lru_cache(maxsize=8)  # noqa: B019 - a few recent blocks per factory; factories are few
    def _rows(self, block: int) -> tuple[tuple, ...]:
        """A block's citizens, kept for the next citizen() or block() asked of it."""
        return self.rows(block)

    def rows(self, block: int) -> tuple[tuple, ...]:
        """A block's citizens, each a row of values in CITIZEN_FIELDS' order, made anew."""
        rng = default_rng([self.seed, self.group_index, block])
        return _make_block(self.group, rng, block * BLOCK, self._anchor, self.pool)


class CitizenStream:
    """The citizens of one share of many: whole blocks, dealt round-robin, without end.

    Each citizen's dict is made as it is taken. Making a block takes milliseconds at once,
    which a load process's event loop would spend late for every arrival due meanwhile: once
    most of a block is taken, `upcoming` names the next, for the caller to have it made at a
    moment that suits it (prepare).

    A stream holds the block it is taking and the next, made for it alone: a block is never
    taken twice, and the factories' shared cache would keep up to 8 of them (~0.6 MB each) in
    every load process for nothing."""

    def __init__(self, factory: CitizenFactory, share: int, shares: int):
        self.factory, self.shares = factory, shares
        self.block, self.taken = share, 0
        self._rows: tuple[tuple, ...] | None = None  # the block being taken
        self._next: tuple[int, tuple[tuple, ...]] | None = None  # a block made ahead, by number

    def __iter__(self) -> CitizenStream:
        return self

    def __next__(self) -> dict:
        return citizen_of(self.next_row())

    def next_row(self) -> tuple:
        """The next citizen as a row of values in CITIZEN_FIELDS' order: a row of the block
        (nothing made), where a dict of the citizen would take 832 bytes more."""
        if self.taken == BLOCK:
            self.block, self.taken, self._rows = self.block + self.shares, 0, None
        if self._rows is None:
            ahead, self._next = self._next, None
            self._rows = ahead[1] if ahead and ahead[0] == self.block else \
                self.factory.rows(self.block)
        row = self._rows[self.taken]
        self.taken += 1
        return row

    def upcoming(self) -> int | None:
        """The block this stream takes next, once three quarters of the current one are taken."""
        return self.block + self.shares if self.taken >= BLOCK * 3 // 4 else None

    def prepare(self, block: int) -> None:
        """Make a block now, so that taking its citizens later costs no more than each one's."""
        if block > self.block and (self._next is None or self._next[0] != block):
            self._next = (block, self.factory.rows(block))


def _years_before(day: dt.date, years: int) -> dt.date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February in a year that has none
        return day.replace(year=day.year - years, day=28)


def _make_block(group: CitizenGroup, rng: np.random.Generator, first: int,
                anchor: np.ndarray, pool: IdentityPool) -> tuple[tuple, ...]:
    """BLOCK citizens, column by column: numpy does the per-citizen work, Python makes
    one row per citizen (the draws' order is the citizens' identity: keep it)."""
    n = BLOCK
    t = group.traits
    ages = np.clip(t.age.draw(rng, n), 0, 120).astype(np.int64)
    births = anchor[ages] - rng.integers(0, 365, n)
    income = t.income.draw(rng, n).astype(np.int64)
    veteran = t.veteran.draw(rng, n).astype(bool)
    household_size = t.household_size.draw(rng, n).astype(np.int64)
    disability = t.disability.draw(rng, n).astype(bool)
    employment = t.employment.draw(rng, n)
    states = t.state.draw(rng, n).tolist()
    language = t.language.draw(rng, n)
    digital_comfort = t.digital_comfort.draw(rng, n)
    picks = rng.integers(0, 1 << 30, size=(6, n))
    numbers = np.arange(first, first + n)
    first_pick = picks[0] % len(pool.first_names)
    last_pick = picks[1] % len(pool.last_names)
    first_names, last_names = pool.first_names[first_pick], pool.last_names[last_pick]
    zips_by_state = pool.zips_by_state
    columns = (
        [f"{group.name}-{number:07d}" for number in range(first, first + n)],
        numbers.tolist(),
        [group.name] * n,
        (first_names + " " + last_names).tolist(),
        first_names.tolist(),
        last_names.tolist(),
        ages.tolist(),
        np.datetime_as_string((births - _EPOCH_ORDINAL).astype("datetime64[D]")).tolist(),
        income.tolist(),
        veteran.tolist(),
        household_size.tolist(),
        disability.tolist(),
        employment.tolist(),
        states,
        [zips_by_state[state][pick % len(zips_by_state[state])]
         for state, pick in zip(states, picks[2].tolist(), strict=True)],
        pool.streets[picks[3] % len(pool.streets)].tolist(),
        pool.cities[picks[4] % len(pool.cities)].tolist(),
        (pool.email_first[first_pick] + "." + pool.email_last[last_pick]
         + _EMAIL_TAILS[numbers % len(_EMAIL_TAILS)]).tolist(),
        (_PHONE_AREAS[picks[5] % len(_PHONE_AREAS)] + _TWO_DIGITS[picks[5] % 100]).tolist(),
        language.tolist(),
        digital_comfort.tolist(),
        _BANDS[ages].tolist(),
        _COHORTS[ages, veteran.astype(np.int64)].tolist(),
    )
    return tuple(zip(*columns, strict=True))


def preview(scenario: Scenario, count: int) -> Iterator[dict]:
    """The first citizens of a run, groups interleaved in proportion to their counts."""
    factories = [CitizenFactory(scenario, i) for i in range(len(scenario.citizens))]
    made = [0] * len(factories)
    total = sum(group.count for group in scenario.citizens)
    for _ in range(count):
        # The group furthest behind its share goes next: a stable, proportional interleave.
        index = min(range(len(factories)),
                    key=lambda i: (made[i] + 1) * total / scenario.citizens[i].count)
        yield factories[index].citizen(made[index])
        made[index] += 1
