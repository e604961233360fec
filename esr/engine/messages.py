"""What an ESR master and its workers say to each other, besides Locust's own messages.

Custom messages go through Locust's `runner.send_message` / `register_message`; data
rides on Locust's worker reports under the keys below (never Locust's reserved ones).
Payloads are msgpack: plain dicts, lists, strings and numbers only.
"""

from __future__ import annotations

# ---- custom messages -------------------------------------------------------------------------

HELLO = "esr_hello"
"""Worker -> master, once connected: {"sha256", "version", "file"} of the scenario it runs,
and {"host", "capacity": {"open_files", "memory_bytes"}} of the machine it runs on.
The master refuses (tells to quit) a worker whose scenario or ESR version differs."""

IDENTIFY = "esr_identify"
"""Worker -> master, just before Locust's client_ready on the same connection: HELLO's data.
The master takes a worker in (Locust's workers, a share of the citizens) only if it
identified itself first with this master's scenario and ESR version; no answer."""

WELCOME = "esr_welcome"
"""Master -> worker, the hello accepted: the run's settings (as RUN). A worker starts no
citizens before it, so a refused worker never sends a request nobody counts."""

RUN = "esr_run"
"""Master -> workers, at each test start (and with WELCOME): {"run_id", "time_scale",
"user_scale", "workers", "handovers", "started_s"}: "workers" names in order the workers that
share the open model's arrivals (those connected at the start), "handovers" the changes to
that sharing so far (as HANDOVER), "started_s" the run's start (epoch seconds), where its
schedule begins. The per-run values a worker takes from its master:
never from Locust's parsed options, which the web UI's form can write. Anything else (files,
permissions) a worker takes from its own command line only."""

HANDOVER = "esr_handover"
"""Master -> workers, as a worker sharing the open model's arrivals is lost: {"handovers":
[[from_s, [takers]], ...]}, every handover of the run so far, in order (arrivals.Handover):
from a whole second of the schedule at least arrivals.HANDOVER_S ahead, the arrivals of the
workers no longer among the takers (indices in RUN's "workers") go to those that are. Every
survivor switches at that same instant of the schedule."""

SCENARIO_WANTED = "esr_scenario_wanted"
"""Standing worker (esr/pool.py, not a Locust process) -> whoever holds the pool address:
{"version", "host", "capacity"}. A run's master answers SCENARIO while its run
can take workers, else NO_RUN; the service's lobby answers NO_RUN between runs."""

SCENARIO = "esr_scenario"
"""Master -> standing worker: the offer (pool.offer_of): {"file", "source", "templates",
"sha256", "version"}. Data, never code: the worker reads it as any scenario file."""

NO_RUN = "esr_no_run"
"""Master or lobby -> standing worker: no run to join now; ask again later. {}"""

FAULT = "esr_fault"
"""Master -> workers: a client-side chaos fault to apply (chaos.Fault.wire())."""

ACK = "esr_ack"
"""Master -> worker, for each report of it the master received: {"sent_at": the report's
SENT_AT, echoed; "at": the master's clock (epoch seconds) as it sent the ack}. A worker stops
its citizens once no report it sent in the last lost_workers.silence_limit_s() has been
acknowledged (its master cannot hear it: its requests would go uncounted); "sent_at" keeps
that judgment on the worker's own clock, and "at" comes back in ACKED, so the master can
place the worker's clock against its own (lost_workers.py)."""

# ---- keys of a worker's report (Locust's report_to_master / worker_report data) --------------

DRAINED = "esr"
"""The probe data drained since the last report (its shape: probes.Drained)."""

REQUESTS = "esr_requests"
"""How many requests that drained data holds (answered requests)."""

CITIZENS = "esr_citizens"
"""Citizens the worker runs, or was asked to run if more."""

SENT_AT = "esr_sent_at"
"""The worker's clock (time.monotonic(), seconds) as it drained the report."""

STARTED = "esr_started"
"""Requests the worker's citizens started since its previous report (the ledger's rate)."""

IN_FLIGHT = "esr_in_flight"
"""Requests started and not yet answered as the report was drained (none of them counted in
it yet): what a worker lost after this report may have had the target count already."""

ACKED = "esr_acked"
"""[master's "at", worker's clock as the ack arrived] of the latest ACK the worker received,
or absent before the first."""

ARRIVALS_GIVEN = "esr_arrivals_given"
"""Open model: how many arrivals the sharing has given each worker so far (a list, by index in
RUN's "workers"), as this worker judged the schedule: a lost worker's whole share, which its
own reports cannot tell (lost_workers.py)."""

FINAL = "esr_final"
"""Present and true on the report a worker sends from its test_stop: its last for this run."""


def run_settings(run_id: str, time_scale: float, user_scale: float,
                 workers: list[str], handovers: list, started_s: float) -> dict:
    """The RUN / WELCOME payload."""
    return {"run_id": run_id, "time_scale": time_scale, "user_scale": user_scale,
            "workers": workers, "handovers": handovers, "started_s": started_s}
