"""The dashboard through the Flask test client: sign-in, its security properties, every page.

The app's public URL is https, so the session cookie is Secure and the test client speaks https;
Flask-WTF then also checks that a POST's Referer is this site, as a browser would send it.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import pyotp
import pytest
from flask import Flask
from flask.testing import FlaskClient
from pytest_httpserver import HTTPServer

import gateways
from api.dashboard import COOKIE_NAME
from gateways.base import Card, GatewayOutcomeUnknown, GatewayUnavailable, ReversalResult
from gateways.simulator import SimulatorGateway
from ivr.callstate import CallServices
from payments.accounts import get_project_by_slug
from payments.attempts import pay
from payments.breaker import PAUSED_EVENT
from payments.delivery import deliver_due
from payments.outbox import SIGNATURE_HEADER, record_project_event, signature_header
from payments.projects import setting_changes
from payments.refunds import MAX_LOOK_UPS, reconcile_operations, run_operation
from payments.services import Services
from payments.store import DashboardUser
from payments.users import EMAIL_FAILURES, TOTP_PURPOSE, check_second_factor, create_user
from tests.conftest import PUBLIC_URL, Clock, set_project
from tests.leakscan import LeakScan
from tests.ops.conftest import QueuedJobs, app_for, queued_services

PASSWORD = "correct horse battery staple"
REFERER = {"Referer": f"{PUBLIC_URL}/dashboard/"}
CARD = "4242424242424242"


@pytest.fixture
def user(services: Services, merchant: dict[str, str]) -> str:
    """A dashboard user of Acme Inc (which owns project 'acme')."""
    with services.db.transaction() as tx:
        create_user(tx, "owner@acme.example", "Acme Inc", now=services.clock(), password=PASSWORD)
    return "owner@acme.example"


@pytest.fixture
def services(database_url: str, clock: Clock) -> Iterator[CallServices]:
    """Webhook jobs held, so the tests send deliveries themselves."""
    yield from queued_services(database_url, clock, QueuedJobs())


@pytest.fixture
def app(services: CallServices) -> Flask:
    return app_for(services)


@pytest.fixture
def browser(app: Flask) -> FlaskClient:
    """A client that reaches the app at its https public URL."""
    client = app.test_client()
    client.environ_base |= {"wsgi.url_scheme": "https", "HTTP_HOST": "paydial.example.com"}
    return client


def csrf_of(client: FlaskClient, path: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).get_data(as_text=True))
    assert found, f"no CSRF token on {path}"
    return found.group(1)


def post(client: FlaskClient, path: str, data: dict[str, Any] | None = None, page: str = "") -> Any:
    """A form POST as the browser makes it: the page's CSRF token, a same-site Referer."""
    token = csrf_of(client, page or "/dashboard/login")
    return client.post(path, data={"csrf_token": token, **(data or {})}, headers=REFERER)


def sign_in(client: FlaskClient, email: str, password: str = PASSWORD) -> Any:
    return post(client, "/dashboard/login", {"email": email, "password": password})


def new_session(client: FlaskClient, merchant: dict[str, str], amount: str) -> dict[str, Any]:
    body = {"project": "acme", "caller": "+14155550100", "amount": amount}
    response = client.post(
        "/v1/sessions",
        json=body | {"mode": "charge", "gateway": "stripe"},
        headers={"Authorization": merchant["test"]},
    )
    assert response.status_code == 201, response.get_json()
    created: dict[str, Any] = response.get_json()
    return created


@pytest.fixture
def signed_in(browser: FlaskClient, user: str) -> FlaskClient:
    response = sign_in(browser, user)
    assert response.status_code == 302, response.get_data(as_text=True)
    return browser


PAGES = [
    "/dashboard/",
    "/dashboard/acme/",
    "/dashboard/acme/sessions",
    "/dashboard/acme/settings",
    "/dashboard/acme/developers",
    "/dashboard/security",
]


@pytest.mark.parametrize("path", PAGES)
def test_every_page_without_a_session_redirects_to_sign_in(
    browser: FlaskClient, merchant: dict[str, str], path: str
) -> None:
    response = browser.get(path)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/dashboard/login?next=")


def test_the_session_cookie_is_signed_httponly_secure_and_lax(
    browser: FlaskClient, user: str
) -> None:
    response = sign_in(browser, user)
    cookie = next(
        c for c in response.headers.getlist("Set-Cookie") if c.startswith(COOKIE_NAME + "=")
    )
    assert all(flag in cookie for flag in ("HttpOnly", "Secure", "SameSite=Lax"))
    assert PASSWORD not in cookie and user not in cookie


def test_a_wrong_password_is_refused_and_throttled_even_when_then_right(
    browser: FlaskClient, user: str
) -> None:
    for _ in range(EMAIL_FAILURES):
        assert sign_in(browser, user, "wrong password!").status_code == 401
    throttled = sign_in(browser, user)
    assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) > 0
    assert browser.get("/dashboard/acme/").status_code == 302


def test_sign_in_is_throttled_per_address_across_emails(browser: FlaskClient, user: str) -> None:
    for n in range(20):
        assert sign_in(browser, f"nobody{n}@acme.example", "x").status_code == 401
    assert sign_in(browser, user).status_code == 429


def test_the_session_ends_after_the_idle_timeout(signed_in: FlaskClient, clock: Clock) -> None:
    assert signed_in.get("/dashboard/acme/").status_code == 200
    clock.advance(minutes=29)
    assert signed_in.get("/dashboard/acme/").status_code == 200
    clock.advance(minutes=31)
    assert signed_in.get("/dashboard/acme/").status_code == 302


@pytest.mark.parametrize(
    "path",
    [
        "/dashboard/login",
        "/dashboard/logout",
        "/dashboard/acme/settings",
        "/dashboard/acme/keys",
        "/dashboard/acme/webhook",
        "/dashboard/acme/webhook/rotate",
        "/dashboard/acme/gateways",
        "/dashboard/acme/webhook/test",
        "/dashboard/login/code",
        "/dashboard/security/totp",
        "/dashboard/security/totp/enable",
        "/dashboard/security/totp/disable",
    ],
)
def test_every_post_without_a_csrf_token_is_refused(
    signed_in: FlaskClient, services: Services, path: str
) -> None:
    response = signed_in.post(path, data={"display_name": "Evil"}, headers=REFERER)
    assert response.status_code == 400
    assert "CSRF" in response.get_data(as_text=True)
    assert "Evil" not in signed_in.get("/dashboard/acme/settings").get_data(as_text=True)


def test_another_accounts_project_and_session_are_not_found(
    signed_in: FlaskClient, services: Services, make_project: Callable[..., str]
) -> None:
    make_project("rival", "Rival Ltd")
    for path in ("/dashboard/rival/", "/dashboard/rival/settings", "/dashboard/rival/developers"):
        assert signed_in.get(path).status_code == 404
    response = post(signed_in, "/dashboard/rival/keys", page="/dashboard/acme/developers")
    assert response.status_code == 404
    assert signed_in.get("/dashboard/acme/sessions/not-a-session").status_code == 404


def test_settings_saved_in_the_dashboard_are_audited_and_bad_values_explained(
    signed_in: FlaskClient, services: Services
) -> None:
    form = {
        "display_name": "Acme Tickets",
        "language": "en-US",
        "require_postal_code": "on",
        "accepted_brands": ["visa", "amex"],
        "max_payment_attempts": "2",
        "callback_countries": "US, GB",
        "theme.primary": "#0a7d55",
        "allowed_origins": "https://shop.example",
    }
    saved = post(signed_in, "/dashboard/acme/settings", form, page="/dashboard/acme/settings")
    assert saved.status_code == 302
    page = signed_in.get("/dashboard/acme/settings").get_data(as_text=True)
    assert 'value="Acme Tickets"' in page and "dashboard owner@acme.example" in page
    bad = post(
        signed_in,
        "/dashboard/acme/settings",
        form | {"theme.primary": "red;x:url(y)", "callback_countries": "ZZ"},
        page="/dashboard/acme/settings",
    )
    html = bad.get_data(as_text=True)
    assert bad.status_code == 422
    assert "is not a colour, length or font name" in html and "ISO 3166" in html


def test_keys_are_created_shown_once_and_revoked_for_the_api(
    signed_in: FlaskClient, client: FlaskClient
) -> None:
    created = post(
        signed_in, "/dashboard/acme/keys", {"mode": "live"}, page="/dashboard/acme/developers"
    )
    [key] = re.findall(r"mvn_live_[A-Za-z0-9]{32}", created.get_data(as_text=True))
    auth = {"Authorization": f"Bearer {key}"}
    assert client.get("/v1/auth/check", headers=auth).get_json()["mode"] == "live"
    assert key not in signed_in.get("/dashboard/acme/developers").get_data(as_text=True)
    revoked = post(
        signed_in, f"/dashboard/acme/keys/{key[:17]}/revoke", page="/dashboard/acme/developers"
    )
    assert revoked.status_code == 302
    assert client.get("/v1/auth/check", headers=auth).status_code == 401


def test_the_developers_page_sets_the_webhook_and_shows_twilio_values_and_no_credentials(
    signed_in: FlaskClient,
) -> None:
    page = "/dashboard/acme/developers"
    hooked = post(
        signed_in, "/dashboard/acme/webhook", {"webhook_url": "https://a.example/h"}, page
    )
    assert re.search(r"whsec_[A-Za-z0-9_-]{40,}", hooked.get_data(as_text=True))
    saved = post(
        signed_in,
        "/dashboard/acme/gateways",
        {"gateway": "stripe", "credential.secret_key": "sk_test_SECRET123"},
        page,
    )
    assert saved.status_code == 302
    html = signed_in.get(page).get_data(as_text=True)
    assert "stripe (test): configured" in html and "sk_test_SECRET123" not in html
    assert f"{PUBLIC_URL}/twilio/voice" in html and f"{PUBLIC_URL}/twilio/fallback" in html


def test_a_session_page_shows_the_timeline_and_cancels_then_the_list_finds_it(
    signed_in: FlaskClient, client: FlaskClient, merchant: dict[str, str]
) -> None:
    created = new_session(client, merchant, "12.50")
    path = f"/dashboard/acme/sessions/{created['session_id']}"
    page = signed_in.get(path).get_data(as_text=True)
    assert "Cancel this session" in page and "$12.50" in page
    assert post(signed_in, f"{path}/cancel", {"mode": "test"}, page=path).status_code == 302
    page = signed_in.get(path).get_data(as_text=True)
    assert "cancelled_by_merchant" in page and "Cancel this session" not in page
    listed = signed_in.get(f"/dashboard/acme/sessions?status=cancelled&q={created['session_id']}")
    assert created["session_id"][:8] in listed.get_data(as_text=True)
    live = signed_in.get(f"{path}?mode=live")
    assert live.status_code == 404, "a test session is not in live mode"


def test_a_failing_delivery_is_shown_and_replayed_from_the_session_page(
    signed_in: FlaskClient,
    client: FlaskClient,
    merchant: dict[str, str],
    services: Services,
    httpserver: HTTPServer,
) -> None:
    hooks = httpserver.url_for("/hooks")
    set_project(services, "acme", webhook_url=hooks, webhook_events=["cancelled"])
    httpserver.expect_oneshot_request("/hooks").respond_with_data("no", status=500)
    httpserver.expect_oneshot_request("/hooks").respond_with_data("ok", status=200)
    created = new_session(client, merchant, "5")
    sid = created["session_id"]
    client.post(f"/v1/sessions/{sid}/cancel", headers={"Authorization": merchant["test"]})
    deliver_due(services)
    path = f"/dashboard/acme/sessions/{sid}"
    assert "HTTP 500" in signed_in.get(path).get_data(as_text=True)
    overview = signed_in.get("/dashboard/acme/").get_data(as_text=True)
    assert "not delivered after 1 attempts" in overview
    html = signed_in.get(path).get_data(as_text=True)
    [delivery] = re.findall(r"/dashboard/acme/deliveries/([0-9a-f-]{36})/replay", html)
    replay = f"/dashboard/acme/deliveries/{delivery}/replay"
    replayed = post(signed_in, replay, {"mode": "test"}, page=path)
    assert replayed.status_code == 302
    assert "HTTP 200" in signed_in.get(path).get_data(as_text=True)


def test_a_failing_event_about_the_project_is_shown_and_replayed_from_the_developers_page(
    signed_in: FlaskClient, services: Services, httpserver: HTTPServer
) -> None:
    set_project(services, "acme", webhook_url=httpserver.url_for("/hooks"))
    httpserver.expect_oneshot_request("/hooks").respond_with_data("no", status=500)
    httpserver.expect_oneshot_request("/hooks").respond_with_data("ok", status=200)
    with services.db.transaction() as tx:  # as the widget's decline breaker tells the merchant
        project = get_project_by_slug(tx, "acme")
        record_project_event(tx, project, "test", PAUSED_EVENT, services.clock(), {})
    deliver_due(services)

    overview = signed_in.get("/dashboard/acme/").get_data(as_text=True)
    assert f"<code>{PAUSED_EVENT}</code> not delivered after 1 attempts" in overview
    assert 'href="/dashboard/acme/developers?mode=test">about the project</a>' in overview
    page = "/dashboard/acme/developers"
    html = signed_in.get(page).get_data(as_text=True)
    assert re.search(rf"<td>{PAUSED_EVENT}</td>\s*<td>the project", html)
    [delivery] = re.findall(r"/dashboard/acme/deliveries/([0-9a-f-]{36})/replay", html)
    replayed = post(
        signed_in, f"/dashboard/acme/deliveries/{delivery}/replay", {"mode": "test"}, page
    )
    assert replayed.status_code == 302
    assert replayed.headers["Location"].endswith("/dashboard/acme/developers?mode=test")
    assert "HTTP 200" in signed_in.get(page).get_data(as_text=True)


def test_no_page_holds_card_digits_after_a_payment(
    signed_in: FlaskClient,
    services: Services,
    merchant: dict[str, str],
    client: FlaskClient,
    leak_scan: LeakScan,
    request: pytest.FixtureRequest,
) -> None:
    created = new_session(client, merchant, "9.99")
    pay(services, created["session_id"], Card(CARD, 12, 2030, "987"))
    pages = [*PAGES, f"/dashboard/acme/sessions/{created['session_id']}"]
    for path in pages:
        response = signed_in.get(path, follow_redirects=True)
        html = response.get_data(as_text=True)
        assert response.status_code == 200
        assert CARD not in html
        leak_scan.check("dashboard page", request.node.nodeid, html)
    overview = signed_in.get("/dashboard/acme/").get_data(as_text=True)
    assert 'data-approved="1"' in overview
    assert "····4242" in signed_in.get("/dashboard/acme/sessions").get_data(as_text=True)


def test_the_session_page_refunds_part_after_a_confirmation_and_captures_an_authorization(
    signed_in: FlaskClient,
    client: FlaskClient,
    services: Services,
    merchant: dict[str, str],
) -> None:
    queued = services.jobs
    assert isinstance(queued, QueuedJobs)
    paid = new_session(client, merchant, "40.00")["session_id"]
    assert pay(services, paid, Card(CARD, 12, 2030, "123"), attempt=1).approved
    path = f"/dashboard/acme/sessions/{paid}"
    page = signed_in.get(path).get_data(as_text=True)
    assert "I confirm: refund this payment" in page and ">Capture<" not in page

    unconfirmed = post(signed_in, f"{path}/refund", {"mode": "test", "amount": "10"}, page=path)
    too_much = post(
        signed_in, f"{path}/refund", {"mode": "test", "amount": "40.01", "confirm": "yes"}, path
    )
    assert unconfirmed.status_code == 422 and "confirm" in unconfirmed.get_data(as_text=True)
    assert too_much.status_code == 422 and "40.00" in too_much.get_data(as_text=True)
    assert queued.operations == []
    done = post(
        signed_in,
        f"{path}/refund",
        {"mode": "test", "amount": "10.00", "reason": "late", "confirm": "yes"},
        page=path,
    )
    assert done.status_code == 302
    run_operation(services, queued.operations.pop())
    page = signed_in.get(path).get_data(as_text=True)
    assert 'id="amount-refunded">$10.00' in page and "succeeded" in page and "late" in page
    refused = post(signed_in, f"{path}/void", {"mode": "test", "confirm": "yes"}, page=path)
    assert refused.status_code == 409

    set_project(services, "acme", authorize_only=True)
    held = new_session(client, merchant, "30.00")["session_id"]
    assert pay(services, held, Card(CARD, 12, 2030, "123"), attempt=1).approved
    held_path = f"/dashboard/acme/sessions/{held}"
    assert "I confirm: capture this payment" in signed_in.get(held_path).get_data(as_text=True)
    captured = post(
        signed_in, f"{held_path}/capture", {"mode": "test", "confirm": "yes"}, page=held_path
    )
    assert captured.status_code == 302
    run_operation(services, queued.operations.pop())
    assert "$30.00" in signed_in.get(held_path).get_data(as_text=True)


class UnsureSimulator(SimulatorGateway):
    """A gateway that never says: a refund's answer is lost and no look-up or check can tell."""

    check_fails = False

    def check_refundable(self, reference: str) -> None:
        if self.check_fails:
            raise GatewayUnavailable("simulated outage during the settlement check")

    def refund(self, reference: str, amount_cents: int, *, idempotency_key: str) -> ReversalResult:
        super().refund(reference, amount_cents, idempotency_key=idempotency_key)
        raise GatewayOutcomeUnknown("simulated timeout after the refund was made")

    def find_reversal(self, kind: Any, reference: str, *, idempotency_key: str) -> Any:
        raise GatewayUnavailable("simulated outage during the look-up")


def test_the_session_page_shows_a_refund_nobody_could_confirm_and_a_check_that_went_unanswered(
    signed_in: FlaskClient,
    user: str,
    client: FlaskClient,
    services: Services,
    merchant: dict[str, str],
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gateways, "SimulatorGateway", UnsureSimulator)
    queued = services.jobs
    assert isinstance(queued, QueuedJobs)
    paid = new_session(client, merchant, "40.00")["session_id"]
    assert pay(services, paid, Card(CARD, 12, 2030, "123"), attempt=1).approved
    path = f"/dashboard/acme/sessions/{paid}"
    form = {"mode": "test", "amount": "10.00", "confirm": "yes"}
    assert post(signed_in, f"{path}/refund", form, page=path).status_code == 302
    run_operation(services, queued.operations.pop())
    for _ in range(MAX_LOOK_UPS):
        clock.advance(hours=1)
        reconcile_operations(services)
    sign_in(signed_in, user)  # a day later: the dashboard asks again

    monkeypatch.setattr(UnsureSimulator, "check_fails", True)
    unanswered = post(signed_in, f"{path}/refund", form, page=path)

    page = signed_in.get(path).get_data(as_text=True)
    assert "pending (outcome_unconfirmed)" in page
    assert unanswered.status_code == 503
    assert "could not say whether the payment has settled" in unanswered.get_data(as_text=True)
    assert queued.operations == []


def code_at(secret: str, when: datetime) -> str:
    return pyotp.TOTP(secret).at(when)


def enrol(client: FlaskClient, clock: Clock) -> str:
    """Turn two-step sign-in on from the security page; returns the secret shown once."""
    started = post(client, "/dashboard/security/totp", page="/dashboard/security")
    html = started.get_data(as_text=True)
    [secret] = re.findall(r'<code id="totp-secret">([A-Z2-7]+)</code>', html)
    assert "otpauth://totp/Paydial:owner%40acme.example?secret=" + secret in html
    wrong = str((int(code_at(secret, clock())) + 1) % 1_000_000).zfill(6)
    refused = post(
        client, "/dashboard/security/totp/enable", {"code": wrong}, "/dashboard/security"
    )
    assert refused.status_code == 422 and secret not in refused.get_data(as_text=True)
    enabled = post(
        client,
        "/dashboard/security/totp/enable",
        {"code": code_at(secret, clock())},
        "/dashboard/security",
    )
    assert enabled.status_code == 302
    assert "<strong>On.</strong>" in client.get("/dashboard/security").get_data(as_text=True)
    return secret


def test_two_step_sign_in_is_enrolled_with_a_code_then_asked_for_after_the_password(
    signed_in: FlaskClient, browser: FlaskClient, services: Services, user: str, clock: Clock
) -> None:
    secret = enrol(signed_in, clock)
    with services.db.transaction() as tx:
        [row] = [u for u in tx.query(DashboardUser)]
        assert row.totp_secret_sealed and secret.encode() not in row.totp_secret_sealed
    post(signed_in, "/dashboard/logout", page="/dashboard/security")

    password_only = sign_in(browser, user)
    assert password_only.headers["Location"].startswith("/dashboard/login/code")
    assert browser.get("/dashboard/acme/").status_code == 302, "not signed in before the code"
    wrong = post(browser, "/dashboard/login/code", {"code": "000000"}, "/dashboard/login/code")
    assert wrong.status_code == 401
    clock.advance(seconds=30)
    right = post(
        browser,
        "/dashboard/login/code",
        {"code": code_at(secret, clock())},
        "/dashboard/login/code",
    )
    assert right.status_code == 302
    assert browser.get("/dashboard/acme/").status_code == 200


def test_a_code_signs_in_once_and_never_again(
    signed_in: FlaskClient, browser: FlaskClient, user: str, clock: Clock
) -> None:
    secret = enrol(signed_in, clock)
    post(signed_in, "/dashboard/logout", page="/dashboard/security")
    clock.advance(seconds=30)
    code = {"code": code_at(secret, clock())}
    sign_in(browser, user)
    assert post(browser, "/dashboard/login/code", code, "/dashboard/login/code").status_code == 302
    post(browser, "/dashboard/logout", page="/dashboard/acme/")

    sign_in(browser, user)
    replayed = post(browser, "/dashboard/login/code", code, "/dashboard/login/code")
    assert replayed.status_code == 401, "a code already used is refused within its window"
    earlier = {"code": code_at(secret, clock() - timedelta(seconds=30))}
    older = post(browser, "/dashboard/login/code", earlier, "/dashboard/login/code")
    assert older.status_code == 401, "and so is the code of an earlier step"
    clock.advance(seconds=30)
    fresh = {"code": code_at(secret, clock())}
    assert post(browser, "/dashboard/login/code", fresh, "/dashboard/login/code").status_code == 302


def test_one_code_racing_in_two_sign_ins_is_accepted_once(
    signed_in: FlaskClient, services: Services, user: str, clock: Clock
) -> None:
    secret = enrol(signed_in, clock)
    clock.advance(seconds=30)
    code = code_at(secret, clock())
    sealer = services.sealer(TOTP_PURPOSE)
    with services.db.transaction() as tx:
        [row] = [u for u in tx.query(DashboardUser)]
        user_id = row.id
    barrier = threading.Barrier(2)

    def check(address: str) -> bool:
        barrier.wait()
        with services.db.transaction() as tx:
            return check_second_factor(
                tx, user_id, code, address=address, sealer=sealer, now=clock()
            )

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(check, ["192.0.2.1", "192.0.2.2"]))
    assert sorted(results) == [False, True]


def test_wrong_codes_are_throttled_and_a_late_code_starts_again(
    signed_in: FlaskClient, browser: FlaskClient, user: str, clock: Clock
) -> None:
    secret = enrol(signed_in, clock)
    post(signed_in, "/dashboard/logout", page="/dashboard/security")
    sign_in(browser, user)
    for _ in range(EMAIL_FAILURES):
        answer = post(browser, "/dashboard/login/code", {"code": "000000"}, "/dashboard/login/code")
        assert answer.status_code == 401
    code = {"code": code_at(secret, clock())}
    throttled = post(browser, "/dashboard/login/code", code, "/dashboard/login/code")
    assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) > 0
    clock.advance(minutes=16)
    assert sign_in(browser, user).status_code == 302
    clock.advance(minutes=6)
    late = post(browser, "/dashboard/login/code", {"code": code_at(secret, clock())})
    assert late.status_code == 302 and late.headers["Location"].startswith("/dashboard/login")
    assert browser.get("/dashboard/acme/").status_code == 302


def test_two_step_sign_in_is_turned_off_only_with_a_current_code(
    signed_in: FlaskClient, clock: Clock
) -> None:
    secret = enrol(signed_in, clock)
    page = "/dashboard/security"
    refused = post(signed_in, "/dashboard/security/totp/disable", {"code": "12345"}, page)
    assert refused.status_code == 422
    spent = post(
        signed_in, "/dashboard/security/totp/disable", {"code": code_at(secret, clock())}, page
    )
    assert spent.status_code == 422, "the code that turned it on is spent"
    clock.advance(seconds=30)
    off = post(
        signed_in, "/dashboard/security/totp/disable", {"code": code_at(secret, clock())}, page
    )
    assert off.status_code == 302
    assert "<strong>Off.</strong>" in signed_in.get(page).get_data(as_text=True)


def test_rotating_the_webhook_secret_is_audited_without_its_value(
    signed_in: FlaskClient, services: Services
) -> None:
    page = "/dashboard/acme/developers"
    post(signed_in, "/dashboard/acme/webhook", {"webhook_url": "https://a.example/h"}, page)
    rotated = post(signed_in, "/dashboard/acme/webhook/rotate", page=page)
    [secret] = re.findall(r"whsec_[A-Za-z0-9_-]{40,}", rotated.get_data(as_text=True))
    with services.db.transaction() as tx:
        changes = setting_changes(tx, get_project_by_slug(tx, "acme"))
        rows = [(c.actor, c.setting, c.old, c.new) for c in changes]
    assert ("dashboard owner@acme.example", "webhook_secret", "set", "rotated") in rows
    assert secret not in repr(rows)
    html = signed_in.get("/dashboard/acme/settings").get_data(as_text=True)
    assert "<code>webhook_secret</code>" in html


def test_a_test_event_is_signed_sent_and_its_delivery_listed(
    signed_in: FlaskClient, httpserver: HTTPServer, clock: Clock
) -> None:
    page = "/dashboard/acme/developers"
    refused = post(signed_in, "/dashboard/acme/webhook/test", page=page)
    assert refused.status_code == 409 and "Set a webhook URL first." in refused.get_data(True)
    hooked = post(
        signed_in, "/dashboard/acme/webhook", {"webhook_url": httpserver.url_for("/hooks")}, page
    )
    [secret] = re.findall(r"whsec_[A-Za-z0-9_-]{40,}", hooked.get_data(as_text=True))
    httpserver.expect_oneshot_request("/hooks", method="POST").respond_with_data("ok")

    sent = post(signed_in, "/dashboard/acme/webhook/test", {"mode": "live"}, page=page)
    assert sent.status_code == 302 and sent.headers["Location"].endswith("mode=test")
    [(request, _)] = httpserver.log
    body = request.get_data()
    expected = signature_header(secret, body, int(clock().timestamp()))
    assert request.headers[SIGNATURE_HEADER] == expected
    event = request.get_json()
    assert (event["event"], event["environment"], event["status"]) == ("test", "test", "pending")
    html = signed_in.get(sent.headers["Location"]).get_data(as_text=True)
    assert "Test event sent: HTTP 200" in html
    assert re.search(r"<td>test</td>.*HTTP 200", html, re.S)


def test_the_settings_preview_is_the_real_frame_for_a_test_session_framed_by_the_dashboard(
    signed_in: FlaskClient, services: Services
) -> None:
    set_project(services, "acme", widget={"allowed_origins": ["https://shop.example"]})
    html = signed_in.get("/dashboard/acme/settings").get_data(as_text=True)
    [session_id] = re.findall(r'id="preview" data-session="([0-9a-f-]{36})"', html)
    again = signed_in.get("/dashboard/acme/settings").get_data(as_text=True)
    assert f'data-session="{session_id}"' in again, "one preview session, reused"
    assert "/widget/v1/widget.js" in html and "preview.js" in html
    frame = signed_in.get(f"/widget/{session_id}?origin={PUBLIC_URL}", base_url=PUBLIC_URL)
    assert frame.status_code == 200, frame.get_data(as_text=True)
    ancestors = frame.headers["Content-Security-Policy"].split("frame-ancestors ")[1]
    assert ancestors == f"https://shop.example {PUBLIC_URL}"
    evil = signed_in.get(f"/widget/{session_id}?origin=https://evil.example", base_url=PUBLIC_URL)
    assert evil.status_code == 403


def test_a_paid_session_is_found_by_its_confirmation_code(
    signed_in: FlaskClient, services: Services, merchant: dict[str, str], client: FlaskClient
) -> None:
    paid = new_session(client, merchant, "4.00")["session_id"]
    other = new_session(client, merchant, "5.00")["session_id"]
    pay(services, paid, Card(CARD, 12, 2030, "987"))
    path = f"/dashboard/acme/sessions/{paid}"
    [code] = re.findall(
        r"<dt>Confirmation code</dt><dd>(\d{8})</dd>", signed_in.get(path).get_data(True)
    )
    found = signed_in.get(f"/dashboard/acme/sessions?q={code}").get_data(as_text=True)
    assert paid[:8] in found and other[:8] not in found
