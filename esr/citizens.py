"""Synthetic citizens: reproducible, fast, and the same whoever generates them.

Citizen number k of a group is a pure function of (seed, group index, k): its
numeric traits come from block k // BLOCK, drawn with numpy from a generator
seeded by (seed, group, block). Any process can therefore make any citizen,
and splitting the numbers across workers (by whole blocks) changes nothing.

Identity strings (names, streets) come from pools that Faker fills once per
process from a fixed seed; a citizen picks from them with its own draws. Calling
Faker per citizen costs ~190 µs (see benchmarks/citizens.py), far too slow for
a load generator; the pools keep Faker's realism at a fraction of the cost.
Emails use the reserved example.* domains and phones the fictional 555-01xx
exchange, so no synthetic citizen points at a real person.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache, lru_cache

import numpy as np

from .scenario import AGE_BANDS, CitizenGroup, Scenario

BLOCK = 1024
_POOL_SEED = 20260101
_POOL_SIZE = 2048
_EMAIL_DOMAINS = ("example.com", "example.org", "example.net")


@dataclass(frozen=True)
class IdentityPool:
    first_names: tuple[str, ...]
    last_names: tuple[str, ...]
    streets: tuple[str, ...]
    cities: tuple[str, ...]
    zips_by_state: dict[str, tuple[str, ...]]


@cache
def identity_pool() -> IdentityPool:
    """Realistic identity parts, made once per process from a fixed seed (about half a second)."""
    from faker import Faker

    from .presets import PRESETS

    fake = Faker("en_US")
    fake.seed_instance(_POOL_SEED)
    return IdentityPool(
        first_names=tuple(fake.first_name() for _ in range(_POOL_SIZE)),
        last_names=tuple(fake.last_name() for _ in range(_POOL_SIZE)),
        streets=tuple(fake.street_address() for _ in range(_POOL_SIZE)),
        cities=tuple(fake.city() for _ in range(_POOL_SIZE // 4)),
        zips_by_state={state: tuple(fake.zipcode_in_state(state) for _ in range(16))
                       for state in PRESETS["us_population"]},
    )


def _age_band_table() -> tuple[str, ...]:
    table = ["under-18"] * 121
    for low, high, label in AGE_BANDS:
        for age in range(low, min(high, 120) + 1):
            table[age] = label
    return tuple(table)


_BAND_OF_AGE = _age_band_table()


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
        return self.block(block)[offset]

    @lru_cache(maxsize=8)  # noqa: B019 - a few recent blocks per factory; factories are few
    def block(self, block: int) -> tuple[dict, ...]:
        rng = np.random.default_rng([self.seed, self.group_index, block])
        return tuple(_make_block(self.group, rng, block * BLOCK, self._anchor, self.pool))

    def stream(self, share: int = 0, shares: int = 1) -> Iterator[dict]:
        """The citizens of one share of many: whole blocks, dealt round-robin, without end."""
        block = share
        while True:
            yield from self.block(block)
            block += shares


def _years_before(day: dt.date, years: int) -> dt.date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February in a year that has none
        return day.replace(year=day.year - years, day=28)


def _make_block(group: CitizenGroup, rng: np.random.Generator, first: int,
                anchor: np.ndarray, pool: IdentityPool) -> list[dict]:
    n = BLOCK
    t = group.traits
    ages = np.clip(t.age.draw(rng, n), 0, 120).astype(np.int64)
    births = (anchor[ages] - rng.integers(0, 365, n)).tolist()
    columns = {
        "income": t.income.draw(rng, n).astype(np.int64).tolist(),
        "veteran": t.veteran.draw(rng, n).astype(bool).tolist(),
        "household_size": t.household_size.draw(rng, n).astype(np.int64).tolist(),
        "disability": t.disability.draw(rng, n).astype(bool).tolist(),
        "employment": t.employment.draw(rng, n).tolist(),
        "state": t.state.draw(rng, n).tolist(),
        "language": t.language.draw(rng, n).tolist(),
        "digital_comfort": t.digital_comfort.draw(rng, n).tolist(),
    }
    picks = rng.integers(0, 1 << 30, size=(6, n)).tolist()
    first_names, last_names, streets, cities = (pool.first_names, pool.last_names, pool.streets,
                                                pool.cities)
    prefix = group.name
    citizens = []
    for i, age in enumerate(ages.tolist()):
        first_name = first_names[picks[0][i] % len(first_names)]
        last_name = last_names[picks[1][i] % len(last_names)]
        state = columns["state"][i]
        zips = pool.zips_by_state[state]
        number = first + i
        veteran = columns["veteran"][i]
        band = _BAND_OF_AGE[age]
        citizens.append({
            "citizen_id": f"{prefix}-{number:07d}",
            "number": number,
            "group": prefix,
            "name": f"{first_name} {last_name}",
            "first_name": first_name,
            "last_name": last_name,
            "age": age,
            "date_of_birth": dt.date.fromordinal(births[i]).isoformat(),
            "income": columns["income"][i],
            "veteran": veteran,
            "household_size": columns["household_size"][i],
            "disability": columns["disability"][i],
            "employment": columns["employment"][i],
            "state": state,
            "zip": zips[picks[2][i] % len(zips)],
            "address": streets[picks[3][i] % len(streets)],
            "city": cities[picks[4][i] % len(cities)],
            "email": f"{first_name}.{last_name}{number % 1000}@"
                     f"{_EMAIL_DOMAINS[number % 3]}".lower(),
            "phone": f"({200 + picks[5][i] % 800}) 555-01{picks[5][i] % 100:02d}",
            "language": columns["language"][i],
            "digital_comfort": columns["digital_comfort"][i],
            "age_band": band,
            "cohort": f"{band}|{'veteran' if veteran else 'non-veteran'}",
        })
    return citizens


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
