"""Locust's own entry point to an ESR scenario.

    ESR_SCENARIO=examples/rental_stress.yml locust -f locustfiles/esr.py

Every process (master, workers, a single one) builds the same classes at import,
from the scenario file named by ESR_SCENARIO, which must be present on each.
"""

import os
import sys

from locust import events

# Locust imports a locustfile as a module named after the file, with its folder first on
# sys.path: through the repository's locustfiles/esr.py that name is "esr", which hides the
# package, and from here the engine's modules would shadow top-level ones: step aside while
# the package is imported.
_HERE = os.path.dirname(os.path.abspath(__file__))
_PATH = list(sys.path)
if getattr(sys.modules.get("esr"), "__file__", None) == os.path.abspath(__file__):
    del sys.modules["esr"]
sys.path[:] = [p for p in _PATH if os.path.abspath(p or os.curdir) != _HERE]
try:
    from esr.errors import EsrError
    from esr.scenario.reader import load_scenario

    try:  # locust_compat first: it refuses versions of Locust ESR was not tested with
        from esr.engine import locust_compat  # noqa: F401
        from esr.engine.compiler import locustfile_globals
        from esr.engine.roles import install
    except EsrError as error:
        sys.stderr.write("".join(f"esr: {line}\n" for line in error.lines()))
        raise SystemExit(error.exit_code) from None
finally:
    sys.path[:] = _PATH

if "ESR_SCENARIO" not in os.environ:
    raise SystemExit("esr: set ESR_SCENARIO to the scenario file, e.g. "
                     "ESR_SCENARIO=examples/rental_stress.yml locust -f locustfiles/esr.py")
try:
    _scenario = load_scenario(os.environ["ESR_SCENARIO"])
except EsrError as error:
    raise SystemExit("\n".join(f"esr: {line}" for line in error.lines())) from None

install(events, _scenario)
globals().update(locustfile_globals(_scenario))
