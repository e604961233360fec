"""The Locust load shape that walks the run's stage table (see stages.py)."""

from __future__ import annotations

from locust import LoadTestShape

from esr.scenario.stages import citizens_at

# Locust calls tick() about once a second (Runner.shape_worker; a master's tick may come later
# still, after a start that waits for its workers' reports).
TICK_S = 1.0


class ScenarioShape(LoadTestShape):
    """Walks the run's stage table; at the end hands over to ESR's graceful stop."""

    def tick(self):
        run = self.runner.environment.esr
        now = self.get_run_time()
        found = citizens_at(run.phases, now)
        if found is None:
            run.finish()
            return self._last
        phase, citizens, rate = found
        run.phase_entered(phase)
        citizens = run.citizens_allowed(citizens)
        left = run.duration_s - now
        if left < TICK_S:  # the next tick would come after the end: stop on time instead
            run.finish_in(left)
        self._last = (citizens, rate)
        return self._last

    _last = (0, 1.0)
