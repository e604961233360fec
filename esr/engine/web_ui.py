"""ESR in Locust's web UI: a tab of outcomes by cohort, live, and each run's report card.

Runs inside the Locust process that serves the UI (a master, or a single process).
The tab is one of Locust's own extended tabs, fed with every /stats/requests poll;
a small script adds a panel that links the report card once the run has ended
(Locust's tables show text only). Every ESR route honours --web-login as Locust's
do; with --web-login, ESR signs in the one user named by ESR_WEB_USER (default
"esr") with ESR_WEB_PASSWORD, since Locust leaves authentication to the locustfile.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
from pathlib import Path

from flask import Blueprint, abort, redirect, request, send_from_directory, session, url_for
from flask_login import UserMixin, login_user
from markupsafe import escape

from esr.engine.locust_compat import (
    add_script_to_page,
    add_tab,
    add_tab_rows,
    is_index_page,
    is_stats_poll,
    login_guard,
    web_base_path,
)
from esr.report.summary import cohorts
from esr.run_directory import REPORT_CARD

logger = logging.getLogger(__name__)

TAB = "esr-cohorts"
SHOWN_OUTCOMES = ("approved", "rejected", "blocked", "paused", "abandoned", "error")
COLUMNS = [("cohort", "Cohort"), ("citizens", "Citizens"),
           *[(outcome, outcome.capitalize()) for outcome in SHOWN_OUTCOMES],
           ("approval", "Approval rate"), ("ratio", "vs best cohort (4/5 rule)")]
STATIC = Path(__file__).parent / "static"
REFRESH_S = 2


def add_esr_to_web_ui(run) -> None:
    """Add ESR's tab, routes and panel to the web UI of `run` (an engine.EsrRun)."""
    web_ui = run.environment.web_ui
    base = web_base_path(run.environment)
    esr = Blueprint("esr", __name__, url_prefix=f"{base}/esr")
    guarded = login_guard(web_ui)
    add_tab(web_ui, TAB, "ESR citizens", COLUMNS,
            downloads=[(f"{base}/esr/report", "ESR report card (last run)")])

    @esr.route("/status")
    @guarded
    def status():
        return status_of(run)

    @esr.route("/report")
    @guarded
    def last_report():
        card = run.report_card
        if card and card["state"] == "ready":
            return redirect(f"{base}/esr/runs/{card['run_id']}/{REPORT_CARD['html']}")
        return waiting_page(card), 200, {"Content-Type": "text/html; charset=utf-8"}

    @esr.route("/runs/<run_id>/<name>")
    @guarded
    def run_file(run_id: str, name: str):
        card = run.report_card or {}
        reports = Path(run.environment.parsed_options.esr_reports_dir).resolve()
        if run_id == card.get("run_id"):  # the last run, wherever its directory was named
            folder = Path(card["run_dir"])
        else:  # an earlier run of this UI: only under the reports folder
            folder = (reports / run_id).resolve()
            if folder.parent != reports:
                abort(404)
        if name not in REPORT_CARD.values() or not folder.is_dir():
            abort(404)
        return send_from_directory(folder, name)

    @esr.route("/panel.js")
    @guarded
    def panel():
        return send_from_directory(STATIC, "panel.js", mimetype="text/javascript")

    @web_ui.app.after_request
    def extend(response):
        if is_stats_poll(request.path, base) and response.is_json:
            add_tab_rows(web_ui, response, TAB, cohort_rows(run.tally))
        elif is_index_page(request.path, base) and response.mimetype == "text/html":
            add_script_to_page(response, f"{base}/esr/panel.js")
        return response

    if web_ui.web_login:
        _add_login(web_ui, esr, base)
    web_ui.app.register_blueprint(esr)


def status_of(run) -> dict:
    """What the panel shows: the run in progress or last ended, and its report card."""
    runner = run.environment.runner
    tally = run.tally
    card = run.report_card or {}
    return {"state": runner.state, "run_id": card.get("run_id"),
            "phase": run._phase.name if run._phase else None, "citizens": runner.user_count,
            "requests": tally.requests if tally else 0,
            "outcomes": dict(tally.outcomes()) if tally else {},
            "report": card.get("state"), "error": card.get("error")}


def cohort_rows(tally) -> list[dict]:
    """The tab's rows: outcomes by age band x veteran, rated as the report card rates them."""
    if tally is None:
        return []
    counts = [(band, veteran, outcome, n)
              for (_, band, veteran, outcome, _), n in tally.journeys.items()]
    rows = []
    for cohort in cohorts(counts):
        ratio = cohort["impact_ratio"]
        rows.append({
            "cohort": cohort["age_band"] + (" veterans" if cohort["veteran"] else ""),
            "citizens": cohort["citizens"],
            **{outcome: cohort["by_outcome"].get(outcome, 0) for outcome in SHOWN_OUTCOMES},
            "approval": f"{cohort['approval_rate']:.0%}",
            "ratio": "" if ratio is None else f"{ratio:.2f}" + (" below 4/5"
                                                               if cohort["flagged"] else "")})
    return rows


def waiting_page(card: dict | None) -> str:
    """Until the report card exists: say why, and look again every few seconds."""
    if card is None:
        message = "No run has ended yet: start one, and its report card will be here."
    elif card["state"] == "failed":
        message = f"The report card of run {card['run_id']} could not be built: " \
                  f"{' '.join(card.get('error') or [])} (see the Locust log)."
    else:
        message = f"Run {card['run_id']} is {card['state']}; its report card will be here " \
                  "when it has ended."
    return (f'<!doctype html><meta charset="utf-8"><meta http-equiv="refresh" '
            f'content="{REFRESH_S}"><title>ESR report card</title>'
            f'<p style="font-family:sans-serif">{escape(message)}</p>')


class _WebUser(UserMixin):
    def __init__(self, name: str):
        self.id = name


def _add_login(web_ui, esr: Blueprint, base: str) -> None:
    """--web-login: one user, ESR_WEB_USER (default "esr") with ESR_WEB_PASSWORD."""
    user = os.environ.get("ESR_WEB_USER", "esr")
    password = os.environ.get("ESR_WEB_PASSWORD", "")
    if not password:
        logger.error("--web-login without ESR_WEB_PASSWORD: nobody can sign in")
    web_ui.app.config["SECRET_KEY"] = os.environ.get("ESR_WEB_SECRET") or secrets.token_hex(32)
    web_ui.login_manager.user_loader(lambda name: _WebUser(name) if name == user else None)
    web_ui.auth_args = {"username_password_callback": f"{base}/esr/login"}

    @esr.route("/login", methods=["POST"])
    def sign_in():
        given_user = request.form.get("username", "").encode()
        given_password = request.form.get("password", "").encode()
        if password and hmac.compare_digest(given_user, user.encode()) \
                and hmac.compare_digest(given_password, password.encode()):
            login_user(_WebUser(user))
            return redirect(url_for("locust.index"))
        session["auth_error"] = "Invalid username or password"
        return redirect(url_for("locust.login"))
