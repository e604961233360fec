"""ESR: a flight simulator for policy, on Locust.

The public names load on first use, so `esr-locust validate` or `import esr.scenario` does
not pay for the launcher and the report (pandas, numpy) they never touch.
"""

import importlib

__version__ = "0.1.0"

_PUBLIC = {"EsrClient": "esr.client", "Job": "esr.client", "EsrError": "esr.errors",
           "ScenarioError": "esr.errors", "Scenario": "esr.scenario.model",
           "load_scenario": "esr.scenario.reader"}
__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'esr' has no attribute {name!r}")
    return getattr(importlib.import_module(_PUBLIC[name]), name)
