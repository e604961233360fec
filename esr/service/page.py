"""The service's page for people: paste a token once, then see the agency's runs live and
open their report cards. Plain server-rendered HTML, no build step.

The session cookie holds a signed token id (never the secret), HttpOnly and SameSite=Strict;
a revoked token ends its sessions at the next request.
"""


import secrets
import time
from pathlib import Path
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from esr import __version__
from esr.service.agencies import Caller, Unauthorized, authenticate, caller_of
from esr.service.links import report_query, session_token_id, session_value
from esr.service.store import ENDED, Run

SESSION_COOKIE = "esr_session"
SESSION_TTL_S = 12 * 3600
REFRESH_S = 2
PAGE_RUNS = 100
_TEMPLATES = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                         autoescape=select_autoescape(["html", "j2"]), trim_blocks=True,
                         lstrip_blocks=True)
_TEMPLATES.filters["heard_ago"] = lambda epoch: f"{max(0.0, time.time() - epoch):.0f} s ago"


def add_page(app: FastAPI, service) -> None:
    def signed_in(request: Request) -> Caller | None:
        token_id = session_token_id(service.link_key, request.cookies.get(SESSION_COOKIE))
        if token_id is None:
            return None
        try:
            who = caller_of(service.store.token(token_id))
        except Unauthorized:
            return None
        return who if "runs:read" in who.policy.scopes else None

    def rows(who: Caller) -> list[dict]:
        return [_row(run) for run in service.store.runs(who.agency, limit=PAGE_RUNS)]

    @app.get("/", include_in_schema=False)
    @app.get("/runs", include_in_schema=False)
    def page(request: Request) -> Response:
        who = signed_in(request)
        return _render(None if who is None else who.agency, rows(who) if who else [])

    @app.get("/runs/rows", include_in_schema=False)
    def page_rows(request: Request) -> Response:
        who = signed_in(request)
        if who is None:
            return Response("sign in again", status_code=401)
        return HTMLResponse(_TEMPLATES.get_template("rows.html.j2").render(runs=rows(who)),
                            headers=_HEADERS)

    @app.get("/pool/rows", include_in_schema=False)
    def page_pool(request: Request) -> Response:
        if signed_in(request) is None:
            return Response("sign in again", status_code=401)
        return HTMLResponse(_TEMPLATES.get_template("pool.html.j2").render(pool=_pool()),
                            headers=_HEADERS)

    def _pool():
        from esr.service.api import pool_out  # the API's view, as GET /v1/pool gives it

        return pool_out(service.pool)

    @app.post("/session", include_in_schema=False)
    async def sign_in(request: Request) -> Response:
        if not _same_origin(request):
            return _render(None, [], "This form must be sent from the service's own page.",
                           status=403)
        form = parse_qs((await request.body())[:4096].decode(errors="replace"))
        try:
            who = authenticate(service.store, f"Bearer {form.get('token', [''])[0]}")
        except Unauthorized as error:
            service.store.audit("auth_failed", client=_client(request), reason=str(error),
                                path="/session")
            return _render(None, [], f"Not signed in: {error}.", status=401)
        if "runs:read" not in who.policy.scopes:  # the page would show it nothing
            return _render(None, [], "Not signed in: this token lacks the scope 'runs:read' "
                           "the page needs to show runs.", status=403)
        service.store.audit("page_sign_in", agency=who.agency, token_id=who.token.id,
                            client=_client(request))
        response = RedirectResponse("/runs", status_code=303)
        response.set_cookie(SESSION_COOKIE, session_value(service.link_key, who.token.id,
                                                          SESSION_TTL_S),
                            max_age=SESSION_TTL_S, httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")
        return response

    @app.post("/logout", include_in_schema=False)
    def sign_out(request: Request) -> Response:
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(SESSION_COOKIE, httponly=True, samesite="strict")
        return response

    def _row(run: Run) -> dict:
        links = []
        if run.status in ENDED and (run.run_dir / "report.html").is_file():
            links = [(label, f"/v1/runs/{run.id}/report.{ext}?"
                      f"{report_query(service.link_key, run.id, ext, service.link_ttl_s)}")
                     for label, ext in (("HTML", "html"), ("PDF", "pdf"), ("JSON", "json"))]
        return {"id": run.id, "scenario_name": run.scenario_name, "status": run.status,
                "reason": run.reason, "created_at": run.created_at, "live": run.live,
                "verdict": run.verdict, "links": links}

    def _render(agency: str | None, runs: list[dict], error: str | None = None,
                status: int = 200) -> Response:
        nonce = secrets.token_urlsafe(16)
        html = _TEMPLATES.get_template("page.html.j2").render(
            agency=agency, runs=runs, pool=_pool(), error=error, version=__version__,
            nonce=nonce,
            refresh_s=REFRESH_S, link_hours=round(service.link_ttl_s / 3600))
        return HTMLResponse(html, status_code=status, headers={
            **_HEADERS, "Content-Security-Policy": "default-src 'none'; style-src "
            f"'unsafe-inline'; script-src 'nonce-{nonce}'; connect-src 'self'; "
            "form-action 'self'; frame-ancestors 'none'"})


# Referrer-Policy same-origin, not no-referrer: under no-referrer a browser sends
# `Origin: null` with the page's own sign-in form, which would then look cross-site. The
# page's links stay within the service, where a referrer tells nothing new.
_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
            "Cache-Control": "no-store", "X-Frame-Options": "DENY"}


def _same_origin(request: Request) -> bool:
    """A sign-in form posted from another site is refused (login CSRF): the browser says
    where the request comes from by Sec-Fetch-Site, or else by Origin."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site == "same-origin"
    origin = request.headers.get("origin")
    if origin is None:  # not sent by a browser
        return True
    return origin == f"{request.url.scheme}://{request.headers.get('host', '')}"


def _client(request: Request) -> str:
    return request.client.host if request.client else "?"
