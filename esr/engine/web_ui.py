"""ESR in Locust's web UI: a tab of outcomes by cohort, live, and each run's report card.

Runs inside the Locust process that serves the UI (a master, or a single process).
The tab is one of Locust's own extended tabs, fed with every /stats/requests poll;
a small script adds a panel that links the report card once the run has ended
(Locust's tables show text only). Every ESR route honours --web-login as Locust's
do; with --web-login, ESR signs in the one user named by ESR_WEB_USER (default
"esr") with ESR_WEB_PASSWORD, since Locust leaves authentication to the locustfile.

Whatever the login, the UI refuses a state-changing request (POST: /swarm, /stop,
/stats/reset, /esr/login, ...) that a browser sent from another site, keeps its cookies
from other sites' requests, and warns when it listens beyond loopback without a login.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Response,
    abort,
    redirect,
    request,
    send_from_directory,
    session,
    url_for,
)
from flask_login import UserMixin, login_required, login_user
from markupsafe import escape
from werkzeug.exceptions import HTTPException

from esr.engine.locust_compat import (
    add_script_to_page,
    add_tab,
    add_tab_rows,
    is_index_page,
    is_stats_poll,
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
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")  # requests that change nothing
# What Locust's own start form posts to /swarm. Locust copies any other posted field that
# names one of its options into parsed_options: json_file or html_file would have the
# process write its statistics wherever the poster says when it exits.
SWARM_FIELDS = frozenset({"user_count", "spawn_rate", "host", "run_time", "profile",
                          "user_classes", "shape_class"})


def add_esr_to_web_ui(run) -> None:
    """Add ESR's tab, routes and panel to the web UI of `run` (a conducting run: conducting.py)."""
    web_ui = run.environment.web_ui
    base = web_base_path(run.environment)
    esr = Blueprint("esr", __name__, url_prefix=f"{base}/esr")
    # Not web_ui.auth_required_if_enabled: it answers any error in the view (a 404 too) with
    # HTTP 200 and the error's text unescaped.
    guarded = login_required if web_ui.web_login else (lambda view: view)
    _guard_the_app(web_ui, base)
    _warn_if_exposed(web_ui)
    add_tab(web_ui, TAB, "ESR citizens", COLUMNS,
            downloads=[(f"{base}/esr/report", "ESR report card (last run)")])

    @esr.route("/status")
    @guarded
    def status():
        return status_of(run)

    @esr.route("/report")
    @guarded
    def last_report():
        card = run.web_runs.report_card
        if card and card["state"] == "ready":
            return redirect(f"{base}/esr/runs/{card['run_id']}/{REPORT_CARD['html']}")
        return waiting_page(card), 200, {"Content-Type": "text/html; charset=utf-8"}

    @esr.route("/runs/<run_id>/<name>")
    @guarded
    def run_file(run_id: str, name: str):
        card = run.web_runs.report_card or {}
        reports = Path(run.options.reports_dir).resolve()
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

    @esr.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        return plain(f"{error.code} {error.name}: {error.description}", error.code or 500)

    if web_ui.web_login:
        _add_login(web_ui, esr, base)
    web_ui.app.register_blueprint(esr)


def plain(text: str, status: int) -> Response:
    """An answer in text, escaped (it may quote a request), with its real status code."""
    return Response(str(escape(text)), status, mimetype="text/plain")


def _guard_the_app(web_ui, base: str) -> None:
    """Every route, Locust's and ESR's: no state change from another site's page, no
    option set through the start form, and cookies that other sites' requests and scripts
    never carry."""
    tls = bool(web_ui.tls_cert and web_ui.tls_key)
    web_ui.app.config.update(
        SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=tls, REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SAMESITE="Strict", REMEMBER_COOKIE_SECURE=tls)

    # On loopback with no login, the UI answers to loopback names only: a page on another
    # site whose name is re-pointed at 127.0.0.1 (DNS rebinding) sends its own name as Host.
    loopback_only = is_loopback(web_ui.host) and not web_ui.web_login

    @web_ui.app.before_request
    def refuse_other_sites():
        if loopback_only and not is_loopback(urlsplit(f"//{request.host}").hostname or ""):
            return plain(f"421 Misdirected Request: this UI answers to 127.0.0.1 or localhost "
                         f"only, not {request.host}", 421)
        if request.method in SAFE_METHODS:
            return None
        sender = sending_site(request.headers)
        if sender is not None and sender != request.host.lower():
            logger.warning("refused %s %s from another site (%s)", request.method,
                           request.path, sender or "an opaque origin")
            return plain(f"403 Forbidden: {request.method} {request.path} comes from another "
                         f"site ({sender or 'an opaque origin'}); it must come from this UI's "
                         "own pages", 403)
        if request.path == f"{base}/swarm":
            return refuse_options(request.form, web_ui.environment.parsed_options)
        if request.path == f"{base}/user":  # Locust's editor of user classes' attributes
            return plain("403 Forbidden: the citizens' classes are compiled from the scenario "
                         "and fixed when the process starts", 403)
        return None


def refuse_options(form, parsed_options) -> Response | None:
    """/swarm: refuse a post that would set any of Locust's options beyond the form's own
    (ESR's own, run.EngineOptions, are read once at start and never again)."""
    options = set(vars(parsed_options)) if parsed_options is not None else set()
    posted = sorted((set(form) & options) - SWARM_FIELDS)
    if not posted:
        return None
    logger.warning("refused a start that would set options: %s", ", ".join(posted))
    return plain(f"400 Bad Request: the start form sets {', '.join(sorted(SWARM_FIELDS))} "
                 f"only; these options are set on the command line: {', '.join(posted)}", 400)


def sending_site(headers) -> str | None:
    """host[:port] of the page that sent a request, from Origin (or Referer without one);
    "" for an opaque origin ("null"); None when neither is sent (not a browser's form or
    script: curl, a pipeline), which a cross-site request from a browser always sends."""
    sender = headers.get("Origin") or headers.get("Referer")
    if sender is None:
        return None
    return urlsplit(sender).netloc.lower() if sender != "null" else ""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # "" (every interface) or a host name
        return False


def _warn_if_exposed(web_ui) -> None:
    if not is_loopback(web_ui.host) and not web_ui.web_login:
        logger.warning(
            "the web UI listens on %s, beyond loopback, with no login: whoever reaches port "
            "%s can start load against any host. Bind it to 127.0.0.1 (--web-bind "
            "127.0.0.1:%s), require a login (--web-login with ESR_WEB_PASSWORD), or, in a "
            "container, publish the port on the host's loopback only (127.0.0.1:%s:%s).",
            web_ui.host or "every interface", web_ui.port, web_ui.port, web_ui.port,
            web_ui.port)


def status_of(run) -> dict:
    """What the panel shows: the run in progress or last ended, and its report card."""
    runner = run.environment.runner
    tally = run.tally
    card = run.web_runs.report_card or {}
    return {"state": runner.state, "run_id": card.get("run_id"),
            "phase": run.phase.name if run.phase else None, "citizens": runner.user_count,
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
