"""ESR: a flight simulator for policy, on Locust."""

__version__ = "0.1.0"

from .errors import EsrError, ScenarioError  # noqa: E402
from .scenario import Scenario, load_scenario  # noqa: E402

__all__ = ["EsrError", "Scenario", "ScenarioError", "load_scenario", "__version__"]
