"""The wire conventions (DESIGN.md): how ESR labels its requests and reads responses."""

import re
from urllib.parse import quote

from esr import __version__

SYNTHETIC_HEADER = "X-ESR-Synthetic"  # <run-id> on every request
CITIZEN_HEADER = "X-ESR-Citizen"  # <citizen-id> on every request
HITL_SKIP_HEADER = "X-HITL-Skip"  # "true" when the scenario says hitl_skip
USER_AGENT = f"esr-locust/{__version__}"
ROUTE_HEADER = "X-ACT-Route"  # a routing decision (act_route probe)
VERDICT_HEADER = "X-ESQ-Verdict"  # "blocked; reason=HIPAA" (legal_blocks probe)
HITL_HEADER = "X-HITL-Pending"  # with HTTP 202: paused for human review (hitl probe)
# W3C Trace Context and Baggage, so a service traced with OpenTelemetry sees ESR's requests as
# synthetic (unless the scenario says trace_context: false): one trace per citizen's journey,
# a span per request, sampled.
TRACEPARENT_HEADER = "traceparent"  # 00-<32 hex: trace id>-<16 hex: span id>-01
BAGGAGE_HEADER = "baggage"  # esr.synthetic=true,esr.run=<run-id>,esr.cohort=<age band>
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")


def traceparent(trace_id: str, span_id: int) -> str:
    """The W3C traceparent of one request: version 00, a trace id of 32 lowercase hex digits,
    a span id from 64 random bits, sampled. Neither id may be zero: the trace id is the
    caller's care, a zero span id becomes 1."""
    return f"00-{trace_id}-{span_id or 1:016x}-01"


def trace_id_in(value: str | None) -> str | None:
    """The trace id of a W3C traceparent, or None if the value is not one."""
    match = _TRACEPARENT.fullmatch(value or "")
    if match is None or value.startswith("ff") or match.group(1) == "0" * 32:
        return None
    return match.group(1)


def baggage(run_id: str, age_band: str) -> str:
    """The W3C baggage of a citizen's requests. Values are percent-encoded beyond letters,
    digits and -._~ ("62+" is 62%2B; the spec allows encoding any character): a W3C decoder
    and OpenTelemetry for Python's, which reads a raw + as a space, then read the same text."""
    return (f"esr.synthetic=true,esr.run={quote(run_id, safe='')},"
            f"esr.cohort={quote(age_band, safe='')}")


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
