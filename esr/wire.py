"""The wire conventions (DESIGN.md): how ESR labels its requests and reads responses."""

from esr import __version__

SYNTHETIC_HEADER = "X-ESR-Synthetic"  # <run-id> on every request
CITIZEN_HEADER = "X-ESR-Citizen"  # <citizen-id> on every request
HITL_SKIP_HEADER = "X-HITL-Skip"  # "true" when the scenario says hitl_skip
USER_AGENT = f"esr-locust/{__version__}"
ROUTE_HEADER = "X-ACT-Route"  # a routing decision (act_route probe)
VERDICT_HEADER = "X-ESQ-Verdict"  # "blocked; reason=HIPAA" (legal_blocks probe)
HITL_HEADER = "X-HITL-Pending"  # with HTTP 202: paused for human review (hitl probe)

# Every journey ends in exactly one of these, decided by its last response (journey.py).
OUTCOMES = ("approved", "rejected", "blocked", "paused", "abandoned", "error", "completed",
            "incomplete")

# The default journey (the seed's bot) POSTs these traits of the citizen to /apply.
DEFAULT_BODY_FIELDS = ("citizen_id", "name", "age", "income", "veteran", "household_size",
                       "date_of_birth", "disability", "employment", "state", "zip", "language")

# Requests give up after this long, and a graceful stop waits a little longer, so no
# citizen is ever killed with a request in flight (a request lost to both sides' counts).
REQUEST_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = REQUEST_TIMEOUT_S + 5.0
