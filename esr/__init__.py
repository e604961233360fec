"""ESR: a flight simulator for policy, on Locust."""

__version__ = "0.1.0"

from esr.client import EsrClient, Job  # noqa: E402
from esr.errors import EsrError, ScenarioError  # noqa: E402
from esr.scenario import Scenario, load_scenario  # noqa: E402

__all__ = ["EsrClient", "EsrError", "Job", "Scenario", "ScenarioError", "load_scenario",
           "__version__"]
