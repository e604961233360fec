"""The service's page for people, in a real browser (Debian's Chromium through Playwright).

A person opens the page, pastes the agency's token, sees the agency's runs (and not another
agency's) with their status kept live, and follows a run's report link (signed: it opens
without a token) to its report card. The session cookie is out of scripts' reach
(HttpOnly) and is never sent from another site (SameSite=Strict); a wrong token is told.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass

import httpx
import pytest
from services import STEADY, RunningService, running_service, wait_for_status

ENDED = ("passed", "failed", "cancelled", "error", "interrupted")
TINY = """
esr: 1
scenario: another agency's rehearsal
seed: 3
citizens: {template: students, count: 3, behavior: {think_time: 100ms..300ms}}
load_profile: {ramp_up: 1s, sustain: 1s}
"""


@dataclass
class Served:
    """The service, housing's token, and one ended run of each agency by name."""

    url: str
    service: RunningService
    housing: str
    runs: dict[str, str]


@pytest.fixture(scope="module")
def served(tmp_path_factory, target):
    with running_service(tmp_path_factory.mktemp("page")) as service:
        secrets = {agency: service.token(agency, "--allow-target", target)
                   for agency in ("housing", "transit")}
        runs = {}
        for agency, scenario in (("housing", STEADY), ("transit", TINY)):
            with service.client(secrets[agency]) as api:
                answer = api.post("/v1/runs", json={"scenario": scenario, "host": target,
                                                    "time_scale": 0.2, "user_scale": 0.3})
                assert answer.status_code == 202, answer.text
                runs[agency] = answer.json()["id"]
        for agency, run_id in runs.items():
            with service.client(secrets[agency]) as api:
                run = wait_for_status(api, run_id, ENDED)
                assert run["status"] == "passed", run
        yield Served(service.url, service, secrets["housing"], runs)


@pytest.fixture(scope="module")
def browser():
    """One Chromium for the module; each test opens contexts of its own in it (cookies and
    storage apart), as Playwright's own runner shares a browser between tests."""
    sync_api = pytest.importorskip("playwright.sync_api")
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (scripts/test installs it)")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            yield launched
        finally:
            launched.close()


def watched(page) -> list[str]:
    """Script errors and console errors (a blocked script, say) the page runs into."""
    problems = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("console", lambda message: problems.append(message.text)
            if message.type == "error" else None)
    return problems


def sign_in(page, url: str, secret: str) -> None:
    page.goto(url + "/")
    page.get_by_label("Paste your agency's token").fill(secret)
    page.get_by_role("button", name="Sign in").click()


def test_a_person_pastes_the_token_sees_the_agency_runs_and_opens_a_report_card(
        served, browser, target):
    mine, theirs = served.runs["housing"], served.runs["transit"]
    context = browser.new_context()
    page = context.new_page()
    problems = watched(page)
    sign_in(page, served.url, served.housing)
    page.wait_for_url(served.url + "/runs")
    assert page.locator("h1").inner_text() == "Runs of housing"
    row = page.locator(f"#run-{mine}")
    assert row.locator(".pill").inner_text() == "passed"
    assert "requests" in row.inner_text()  # the verdict's figures
    assert theirs not in page.content()  # another agency's runs are not listed

    # The session cookie: HttpOnly (no script reads it), SameSite=Strict, never the secret.
    (cookie,) = context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict", cookie
    assert served.housing not in cookie["value"]
    assert page.evaluate("document.cookie") == ""

    # The table is kept live: a run submitted meanwhile appears and moves on, no reload.
    with served.service.client(served.housing) as api:
        answer = api.post("/v1/runs", json={"scenario": TINY, "host": target,
                                            "time_scale": 0.5})
        assert answer.status_code == 202, answer.text
        later = answer.json()["id"]
    page.locator(f"#run-{later}").wait_for(timeout=10_000)
    page.locator(f"#run-{later} .pill.passed").wait_for(timeout=90_000)
    assert theirs not in page.locator("#runs").inner_html()

    # The report link is signed: it opens the report card, and opens without the session too.
    link = row.get_by_role("link", name="HTML")
    href = link.get_attribute("href")
    assert "signature=" in href and "expires=" in href
    link.click()
    page.wait_for_load_state()
    assert page.url.startswith(f"{served.url}/v1/runs/{mine}/report.html?")
    assert page.locator("#verdict").inner_text().strip() in ("PASS", "FAIL")
    stranger = browser.new_context().new_page()  # no cookie, no token
    stranger.goto(served.url + href)
    assert stranger.locator("#verdict").inner_text().strip() in ("PASS", "FAIL")
    assert httpx.get(served.url + href).status_code == 200
    assert httpx.get(served.url + href.replace(mine, theirs)).status_code == 404
    assert problems == []


def test_a_wrong_token_is_told_and_signs_nobody_in(served, browser):
    context = browser.new_context()
    page = context.new_page()
    sign_in(page, served.url, "esr_not-a-token")
    assert "Not signed in: unknown token" in page.locator("#error").inner_text()
    assert page.get_by_label("Paste your agency's token").is_visible()
    assert context.cookies() == []
    page.goto(served.url + "/runs")
    assert page.locator("h1").inner_text() == "Sign in"
    assert served.runs["housing"] not in page.content()


def test_a_token_that_cannot_read_runs_is_told_so(served, browser):
    """A pipeline's token (runs:start only) would sign in to an empty page: it is refused."""
    context = browser.new_context()
    page = context.new_page()
    sign_in(page, served.url, served.service.token("housing", "--scopes", "runs:start"))
    assert "lacks the scope 'runs:read'" in page.locator("#error").inner_text()
    assert context.cookies() == []


def test_another_agency_sees_its_own_runs_only(served, browser):
    page = browser.new_context().new_page()
    sign_in(page, served.url, served.service.token("transit"))
    page.wait_for_url(served.url + "/runs")
    assert page.locator("h1").inner_text() == "Runs of transit"
    page.locator(f"#run-{served.runs['transit']}").wait_for()
    assert served.runs["housing"] not in page.content()


def test_a_sign_in_form_posted_from_another_site_is_refused(served, browser):
    """Login CSRF: another site's page cannot sign a visitor in to an agency of its choice."""
    context = browser.new_context()
    page = context.new_page()
    page.set_content(f'<form method="post" action="{served.url}/session">'
                     f'<input name="token" value="{served.housing}"></form>')
    with page.expect_response(f"{served.url}/session") as answer:
        page.evaluate("document.forms[0].submit()")
    assert answer.value.status == 403
    assert context.cookies() == []
