"""Scraping ESR's Prometheus endpoint as Prometheus does, and reading the samples back."""

from __future__ import annotations

import contextlib
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Scrape:
    at: float  # time.time() when the answer came
    samples: dict[tuple[str, frozenset], float]

    def total(self, name: str, **labels: str) -> float:
        """The sum of a sample's values over the series whose labels include `labels`."""
        wanted = set(labels.items())
        return sum(value for (sample, series), value in self.samples.items()
                   if sample == name and wanted <= series)

    def by(self, name: str, *keys: str) -> Counter:
        """A sample's values summed by some of its labels."""
        totals: Counter = Counter()
        for (sample, series), value in self.samples.items():
            if sample == name:
                labels = dict(series)
                totals[tuple(labels[k] for k in keys)] += value
        return totals

    def series(self, name: str) -> list[dict[str, str]]:
        return [dict(series) for (sample, series) in self.samples if sample == name]


def scrape(url: str) -> Scrape:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in samples, f"{sample.name} {sample.labels} twice"
            samples[key] = sample.value
    return Scrape(time.time(), samples)


@dataclass
class Scraper:
    """Scrapes `url` every `every_s` in a thread until stopped, keeping every answer (an
    endpoint not listening yet, or gone, is skipped)."""

    url: str
    every_s: float = 0.25
    scrapes: list[Scrape] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> Scraper:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            with contextlib.suppress(urllib.error.URLError, ConnectionError):
                self.scrapes.append(scrape(self.url))
