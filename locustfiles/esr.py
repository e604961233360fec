"""Locust's own entry point to an ESR scenario.

    ESR_SCENARIO=examples/rental_stress.yml locust -f locustfiles/esr.py

Every process (master, workers, a single one) builds the same classes at import,
from the scenario file named by ESR_SCENARIO, which must be present on each.
"""

import os
import sys

from locust import events

# Locust imports this file as a module named "esr" with its folder first on sys.path,
# which hides the esr package: step aside while the package is imported.
_HERE = os.path.dirname(os.path.abspath(__file__))
_PATH = list(sys.path)
if getattr(sys.modules.get("esr"), "__file__", None) == os.path.abspath(__file__):
    del sys.modules["esr"]
sys.path[:] = [p for p in _PATH if os.path.abspath(p or os.curdir) != _HERE]
try:
    from esr.compiler import locustfile_globals
    from esr.engine import install
    from esr.errors import EXIT_BAD_INPUT, EsrError
    from esr.permissions import check, granted_by
    from esr.scenario import load_scenario
finally:
    sys.path[:] = _PATH

if "ESR_SCENARIO" not in os.environ:
    raise SystemExit("esr: set ESR_SCENARIO to the scenario file, e.g. "
                     "ESR_SCENARIO=examples/rental_stress.yml locust -f locustfiles/esr.py")
try:
    _scenario = load_scenario(os.environ["ESR_SCENARIO"])
except EsrError as error:
    raise SystemExit("\n".join(f"esr: {line}" for line in error.lines())) from None



def _permissions_at_start(environment, **_):
    """A scenario may make HTTP requests and nothing else (esr/permissions.py): without the
    flags on this process's command line, its other chaos actions stop it here, before any
    load, as esr-locust would have. What was granted is fixed now: nothing posted to the
    web UI later grants more. Workers run no chaos actions."""
    options = environment.parsed_options
    if options is None or getattr(options, "worker", False):
        return
    granted = granted_by(options, engine=True)
    try:
        check(_scenario, granted, engine=True)
    except EsrError as error:
        for line in error.lines():
            print(f"esr: {line}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT) from None
    environment.esr_permissions = granted  # read by the chaos runner (esr.engine)


events.init.add_listener(_permissions_at_start)  # before ESR's own init listener
install(events, _scenario)
globals().update(locustfile_globals(_scenario))
