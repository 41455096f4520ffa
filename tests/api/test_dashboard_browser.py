"""The dashboard in a real browser: Debian's Chromium, driven by Playwright, against the app in a
real WSGI server, with a merchant's webhook receiver beside it and calls placed by the
Twilio-behaving phone over HTTP. Screenshots of every page go to test-artifacts/dashboard/.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session as OrmSession
from werkzeug.wrappers import Request as WsgiRequest
from werkzeug.wrappers import Response as WsgiResponse

from api import create_app
from gateways.base import Card
from ivr.phone import ScriptedKeypad, http_transport
from ivr.wiring import build_services
from payments.accounts import create_project, get_project_by_slug, issue_key
from payments.attempts import pay
from payments.breaker import PAUSED_EVENT
from payments.model import Environment
from payments.outbox import record_project_event
from payments.services import Services
from payments.store import Database, WebhookDelivery
from payments.users import create_user
from tests.browser import ARTIFACTS, axe_violations, chromium, serving
from tests.conftest import make_settings, set_project
from tests.ivr.twilio_client import phone_over

pytestmark = pytest.mark.browser

EMAIL = "owner@acme.example"
PASSWORD = "correct horse battery staple"
SHOTS = ARTIFACTS / "dashboard"
MOBILE = {"width": 390, "height": 844}
APPROVED, DECLINED = "4242424242424242", "4000000000000002"


@dataclass
class Receiver:
    """The merchant's webhook endpoint: answers the statuses it is told, records what came."""

    statuses: list[int] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    arrived: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))

    @WsgiRequest.application
    def __call__(self, request: WsgiRequest) -> WsgiResponse:
        self.bodies.append(json.loads(request.get_data()))
        status = self.statuses.pop(0) if self.statuses else 200
        self.arrived.release()
        return WsgiResponse("ok", status=status)

    def wait(self) -> dict[str, Any]:
        assert self.arrived.acquire(timeout=60), "no webhook arrived"
        return self.bodies[-1]


@dataclass
class Site:
    url: str
    hooks: str
    receiver: Receiver
    services: Services
    key: str  # a test-mode API key of Acme Inc
    committed: threading.Condition = field(default_factory=threading.Condition)

    def recorded(self, event_id: str, attempts: int) -> None:
        """Wait until the event's delivery attempts are written down: the receiver hears an
        event before its sender records the answer. Woken by every commit of the app's."""

        def done() -> bool:
            with self.services.db.read() as tx:
                count = select(func.count()).where(WebhookDelivery.event_id == event_id)
                return tx.scalar(count) == attempts

        with self.committed:
            assert self.committed.wait_for(done, timeout=60), "the delivery was not recorded"

    def on_commit(self, _: OrmSession) -> None:
        with self.committed:
            self.committed.notify_all()

    def api(self, method: str, path: str, key: str | None = None, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {key or self.key}"}
        return requests.request(method, self.url + path, headers=headers, timeout=30, **kwargs)

    def new_session(self, amount: str = "12.50") -> dict[str, Any]:
        body = {"project": "acme", "caller": "+14155550100", "amount": amount}
        created = self.api(
            "POST", "/v1/sessions", json=body | {"mode": "charge", "gateway": "stripe"}
        )
        assert created.status_code == 201, created.text
        session: dict[str, Any] = created.json()
        return session


@pytest.fixture(scope="module")
def site(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """Acme Inc with a dashboard user, a few payments for the chart, and a webhook receiver."""
    path = tmp_path_factory.mktemp("dashboard") / "paydial.db"
    shutil.copy(sqlite_template, path)
    db = Database(f"sqlite:///{path}")
    # Real time: the browser and the idle timeout both read the wall clock.
    services = build_services(make_settings(f"sqlite:///{path}"), db=db)
    with db.transaction() as tx:
        create_project(tx, "acme", now=services.clock(), account_name="Acme Inc")
        create_user(tx, EMAIL, "Acme Inc", now=services.clock(), password=PASSWORD)
        key = issue_key(tx, "acme", Environment.TEST, now=services.clock()).plaintext
    receiver = Receiver()
    try:
        with serving(create_app(services=services)) as url, serving(receiver) as hooks:
            site = Site(url, f"{hooks}/hooks", receiver, services, key)
            event.listen(OrmSession, "after_commit", site.on_commit)
            try:
                set_project(services, "acme", max_payment_attempts=1)  # a decline ends the session
                for number in (APPROVED, APPROVED, DECLINED):
                    pay(services, site.new_session()["session_id"], Card(number, 12, 2030, "123"))
                yield site
            finally:
                event.remove(OrmSession, "after_commit", site.on_commit)
    finally:
        db.dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as running:
        yield running


def new_page(browser: Browser, **options: Any) -> Page:
    context = browser.new_context(**options)
    context.set_default_timeout(20_000)
    return context.new_page()


@pytest.fixture
def page(browser: Browser, site: Site) -> Iterator[Page]:
    """A signed-in dashboard tab."""
    page = new_page(browser)
    sign_in(page, site)
    yield page
    page.context.close()


def sign_in(page: Page, site: Site) -> None:
    page.goto(f"{site.url}/dashboard/")
    page.get_by_label("Email").fill(EMAIL)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("acme test")


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def pages(site: Site, session_id: str) -> dict[str, str]:
    base = f"{site.url}/dashboard"
    return {
        "overview": f"{base}/acme/",
        "sessions": f"{base}/acme/sessions",
        "session": f"{base}/acme/sessions/{session_id}",
        "settings": f"{base}/acme/settings",
        "developers": f"{base}/acme/developers",
        "security": f"{base}/security",
    }


def test_every_page_after_sign_in_has_no_serious_accessibility_violations(
    browser: Browser, site: Site
) -> None:
    # axe is injected as an inline script, which the dashboard's CSP (rightly) refuses.
    page = new_page(browser, bypass_csp=True)
    page.goto(f"{site.url}/dashboard/")
    expect(page).to_have_url(f"{site.url}/dashboard/login?next=/dashboard/")
    assert axe_violations(page) == []
    shot(page, "login")
    sign_in(page, site)
    paid = site.new_session()
    for name, url in pages(site, paid["session_id"]).items():
        page.goto(url)
        expect(page.locator("h1")).to_be_visible()
        assert axe_violations(page) == [], name
        shot(page, name)
    page.context.close()


def test_the_chart_draws_the_days_payments(page: Page) -> None:
    bars = page.locator("#chart rect.approved[data-approved='2']")
    expect(bars).to_have_count(1)
    box = bars.bounding_box()
    assert box is not None and box["height"] > 20, "two approvals draw a visible bar"
    failed = page.locator("#chart rect.failed[data-failed='1']").bounding_box()
    assert failed is not None and 0 < failed["height"] < box["height"]
    expect(page.locator(".totals")).to_contain_text("2 approved")


def test_a_key_created_in_the_browser_works_until_revoked_there(page: Page, site: Site) -> None:
    page.get_by_role("link", name="Developers").click()
    page.get_by_role("button", name="Create a test key").click()
    key = page.locator("#new-key").inner_text()
    assert site.api("GET", "/v1/auth/check", key=key).status_code == 200
    page.goto(f"{site.url}/dashboard/acme/developers")
    expect(page.locator("#new-key")).to_have_count(0)
    page.get_by_role("button", name=f"Revoke {key[:17]}").click()
    expect(page.get_by_role("status")).to_contain_text("revoked")
    assert site.api("GET", "/v1/auth/check", key=key).status_code == 401


def test_a_display_name_saved_in_the_settings_form_is_heard_on_the_next_call(
    page: Page, site: Site
) -> None:
    page.get_by_role("link", name="Settings").click()
    page.get_by_label("Merchant name callers hear").fill("Acme Tickets")
    page.get_by_role("button", name="Save settings").click()
    expect(page.get_by_role("status")).to_contain_text("Settings saved")
    expect(page.get_by_role("cell", name="display_name")).to_be_visible()

    created = site.new_session()
    heard = (
        phone_over(http_transport(site.url), to=created["sip_uri"])
        .call(ScriptedKeypad([None]))
        .heard
    )
    assert any("secure payment to Acme Tickets for" in line for line in heard), heard


def test_a_failed_delivery_is_replayed_and_a_session_cancelled_in_the_browser(
    page: Page, site: Site
) -> None:
    set_project(site.services, "acme", webhook_url=site.hooks, webhook_events=["cancelled"])
    site.receiver.statuses[:] = [500]
    created = site.new_session("7.00")
    page.goto(f"{site.url}/dashboard/acme/sessions?q={created['session_id']}")
    page.get_by_role("link", name=created["session_id"][:8]).click()
    page.get_by_role("button", name="Cancel this session").click()
    expect(page.locator("#session-status")).to_have_text("cancelled")
    expect(page.get_by_role("button", name="Cancel this session")).to_have_count(0)

    sent = site.receiver.wait()
    assert sent["status"] == "cancelled"
    site.recorded(sent["event_id"], attempts=1)
    page.reload()
    expect(page.locator(".delivery-result")).to_contain_text("HTTP 500")
    page.get_by_role("button", name="Replay").first.click()
    expect(page.get_by_role("status")).to_contain_text("Delivery sent again: 200")
    expect(page.locator(".delivery-result").last).to_contain_text("HTTP 200")
    assert site.receiver.wait()["event_id"] == site.receiver.bodies[0]["event_id"]


def test_a_test_event_is_sent_from_the_developers_page_and_its_delivery_shown(
    page: Page, site: Site
) -> None:
    set_project(site.services, "acme", webhook_url=site.hooks)
    page.goto(f"{site.url}/dashboard/acme/developers")
    page.get_by_role("button", name="Send a test event").click()
    expect(page.get_by_role("status")).to_contain_text("Test event sent: HTTP 200")
    assert site.receiver.wait()["event"] == "test"
    expect(page.locator("#deliveries tbody tr").first).to_contain_text("test")


def test_a_failed_event_about_the_project_is_replayed_from_the_developers_page(
    page: Page, site: Site
) -> None:
    set_project(site.services, "acme", webhook_url=site.hooks)
    site.receiver.statuses[:] = [500]
    with site.services.db.transaction() as tx:  # as the widget's decline breaker tells the merchant
        project = get_project_by_slug(tx, "acme")
        now, body = site.services.clock(), {"event": PAUSED_EVENT}
        record_project_event(tx, project, "test", PAUSED_EVENT, now, body)
    sent = site.receiver.wait()
    assert sent["event"] == PAUSED_EVENT
    site.recorded(sent["event_id"], attempts=1)

    page.goto(f"{site.url}/dashboard/acme/developers")
    row = page.locator("#deliveries tbody tr").filter(has_text=PAUSED_EVENT)
    expect(row).to_contain_text("the project")
    expect(row.locator(".delivery-result")).to_contain_text("HTTP 500")
    row.get_by_role("button", name="Replay").click()
    expect(page.get_by_role("status")).to_contain_text("Delivery sent again: 200")
    assert site.receiver.wait()["event_id"] == sent["event_id"]
    expect(page.locator("#deliveries tbody tr").first).to_contain_text("HTTP 200")


def test_the_settings_preview_is_the_real_frame_and_follows_the_theme_as_typed(
    page: Page, site: Site
) -> None:
    # The project allows only its shop to frame the widget; the preview still shows.
    set_project(site.services, "acme", widget={"allowed_origins": ["https://shop.example"]})
    page.goto(f"{site.url}/dashboard/acme/settings")
    expect(page.locator("#preview")).to_have_attribute("data-ready", "true")
    frame = page.frame_locator("#preview iframe")
    submit = frame.locator("#submit")
    expect(submit).to_have_text("Pay $10.00")
    page.get_by_label("Theme: primary", exact=True).fill("rgb(10, 20, 30)")
    expect(submit).to_have_css("background-color", "rgb(10, 20, 30)")
    page.get_by_label("Label: submit").fill("Pay {amount} now")
    expect(submit).to_have_text("Pay $10.00 now")
    page.get_by_label("Ask for cardholder name").check()
    expect(frame.get_by_label("Name on card")).to_be_visible()
    page.get_by_label("Theme: primary", exact=True).fill("")
    expect(submit).to_have_css("background-color", "rgb(31, 94, 255)")  # the palette's default
    shot(page, "settings-preview")


def test_every_page_fits_a_390_pixel_screen_and_its_controls_can_be_used(
    browser: Browser, site: Site
) -> None:
    page = new_page(browser, viewport=MOBILE, is_mobile=True, has_touch=True)
    sign_in(page, site)
    paid = site.new_session()
    for name, url in pages(site, paid["session_id"]).items():
        page.goto(url)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= MOBILE["width"], f"{name} scrolls sideways: {width}px"
        for control in page.locator("main button:visible, .top a:visible").all():
            control.scroll_into_view_if_needed()  # a wide table scrolls inside its own box
            box = control.bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, name
            assert box["height"] >= 24, f"{name}: a control under 24 px tall"
        shot(page, f"mobile-{name}")
    page.goto(pages(site, paid["session_id"])["overview"])
    page.get_by_role("link", name="Live").tap()
    expect(page.locator("h1 .badge")).to_have_text("live")
    page.get_by_role("link", name="Sessions").tap()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Sessions")
    page.get_by_label("Status").select_option("payment-success")
    page.get_by_role("button", name="Search").tap()
    expect(page).to_have_url(re.compile(r"status=payment-success"))
    page.context.close()
