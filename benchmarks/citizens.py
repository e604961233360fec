"""Citizens per second on one core: ESR's block generator against the naive all-Faker one.

Both make the same fields (identity, date of birth, numeric and categorical traits);
the naive one seeds Faker per citizen and asks it for everything, as a first
attempt would. Measured side by side in one run; figures drift between runs on
shared machines, so read the ratio. Goal (issue 2): >= 50,000 citizens/s.

    .venv/bin/python benchmarks/citizens.py [--citizens N]
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from pathlib import Path

from faker import Faker

from esr.population.citizens import BLOCK, CitizenFactory, identity_pool
from esr.scenario.reader import load_scenario

SCENARIO = Path(__file__).resolve().parent.parent / "examples" / "mixed_demographics.yml"
REFERENCE = dt.date(2026, 1, 1)


def naive_citizens(count: int) -> None:
    fake = Faker("en_US")
    for k in range(count):
        fake.seed_instance(k)
        age = fake.random_int(18, 95)
        {"citizen_id": f"c-{k}", "name": fake.name(), "address": fake.street_address(),
         "city": fake.city(), "zip": fake.zipcode(), "email": fake.email(),
         "phone": fake.phone_number(),
         "date_of_birth": fake.date_of_birth(minimum_age=age, maximum_age=age).isoformat(),
         "age": age, "income": fake.random_int(0, 120_000), "veteran": fake.boolean(7),
         "household_size": fake.random_int(1, 6), "disability": fake.boolean(13),
         "employment": fake.random_element(("employed", "unemployed", "retired")),
         "state": fake.state_abbr(), "language": fake.random_element(("en", "es", "zh")),
         "digital_comfort": fake.random_element(("low", "medium", "high"))}


def esr_citizens(count: int) -> None:
    factory = CitizenFactory(load_scenario(SCENARIO), 0)
    stream = factory.stream()
    for _ in range(count):
        next(stream)


def rate(make, count: int) -> float:
    started = time.perf_counter()
    make(count)
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--citizens", type=int, default=200 * BLOCK)
    args = parser.parse_args()
    started = time.perf_counter()
    identity_pool()
    pool_s = time.perf_counter() - started
    naive = rate(naive_citizens, max(2_000, args.citizens // 50))
    fast = rate(esr_citizens, args.citizens)
    print(f"identity pools, once per process: {pool_s * 1000:.0f} ms")
    print(f"naive all-Faker generator:        {naive:>10,.0f} citizens/s")
    print(f"ESR block generator:              {fast:>10,.0f} citizens/s")
    print(f"ratio ESR / naive:                {fast / naive:>10.1f}x  "
          f"(goal: >= 50,000 citizens/s: {'met' if fast >= 50_000 else 'NOT met'})")


if __name__ == "__main__":
    main()
