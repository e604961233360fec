"""ESR: a flight simulator for policy, on Locust."""

__version__ = "0.1.0"

from esr.client import EsrClient, Job  # noqa: E402
from esr.errors import EsrError, ScenarioError  # noqa: E402
from esr.scenario.model import Scenario  # noqa: E402
from esr.scenario.reader import load_scenario

__all__ = ["EsrClient", "EsrError", "Job", "Scenario", "ScenarioError", "load_scenario",
           "__version__"]
