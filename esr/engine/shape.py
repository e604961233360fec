"""The Locust load shape that walks the run's stage table (see stages.py)."""

from __future__ import annotations

from locust import LoadTestShape

from esr.scenario.stages import citizens_at


class ScenarioShape(LoadTestShape):
    """Walks the run's stage table; at the end hands over to ESR's graceful stop."""

    def tick(self):
        run = self.runner.environment.esr
        found = citizens_at(run.phases, self.get_run_time())
        if found is None:
            run.finish()
            return self._last
        phase, citizens, rate = found
        run.phase_entered(phase)
        self._last = (citizens, rate)
        return self._last

    _last = (0, 1.0)
