"""The widget in a real browser: Debian's Chromium, driven by Playwright, across two origins.

The app runs in a real WSGI server on 127.0.0.1; the merchant's page comes from another server
reached as `localhost`, so the frame is cross-origin exactly as on a merchant's site.
"""

from __future__ import annotations

import contextlib
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from playwright.sync_api import Browser, FrameLocator, Page, Request, expect
from werkzeug.wrappers import Request as WsgiRequest
from werkzeug.wrappers import Response as WsgiResponse

from api import create_app
from ivr.wiring import build_services
from payments.accounts import create_project
from payments.breaker import PAUSED_MESSAGE
from payments.services import Services
from payments.store import Database
from tests.browser import ARTIFACTS, chromium, serving
from tests.conftest import free_port, make_settings, set_project
from tests.widget.conftest import APPROVED, DECLINED, new_widget_session

pytestmark = pytest.mark.browser

PARENT_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Checkout</title></head>
<body>
<h1>Checkout</h1>
<button id="before" type="button">Back to cart</button>
<div id="slot"></div>
<script src="{app}/widget/v1/widget.js"></script>
<script>
  window.events = [];
  var params = new URLSearchParams(location.search);
  window.payment = Maven.createPayment({{
    sessionId: params.get("session"),
    baseUrl: params.get("base") || undefined,
    theme: {{ primary: "rgb(10, 20, 30)" }},
    onReady: function () {{ events.push({{ type: "ready" }}); }},
    onSuccess: function (result) {{ events.push({{ type: "success", result: result }}); }},
    onFailure: function (error) {{ events.push({{ type: "failure", error: error }}); }},
  }}).mount("#slot");
</script>
</body></html>
"""


@dataclass
class Site:
    """The running app, the merchant page's origin, and the services behind them."""

    app_url: str
    parent_url: str
    services: Services


@contextlib.contextmanager
def running_site(database: Path, **settings: object) -> Iterator[Site]:
    """The app on a migrated SQLite copy at `database`, and a merchant page on another origin."""
    url = f"sqlite:///{database}"
    db = Database(url)
    # Real time, not the tests' fixed clock: the browser checks expiry dates against its own.
    services = build_services(make_settings(url, **settings), db=db)
    with db.transaction() as tx:
        create_project(tx, "demo", now=services.clock())
        create_project(tx, "shop", now=services.clock())
    app: Flask = create_app(services=services)
    app.config["PAYDIAL_DEMO"] = True
    with serving(app) as app_url:

        @WsgiRequest.application
        def merchant_page(request: WsgiRequest) -> WsgiResponse:
            return WsgiResponse(PARENT_PAGE.format(app=app_url), mimetype="text/html")

        try:
            with serving(merchant_page) as parent_url:
                parent = parent_url.replace("127.0.0.1", "localhost")
                yield Site(app_url, parent, services)
        finally:
            db.dispose()


def _database_copy(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("browser") / "paydial.db"
    shutil.copy(sqlite_template, path)
    return path


@pytest.fixture(scope="module")
def site(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with running_site(_database_copy(sqlite_template, tmp_path_factory)) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as running:
        yield running


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    context.set_default_timeout(10_000)
    page = context.new_page()
    yield page
    context.close()


def open_checkout(page: Page, site: Site) -> tuple[str, FrameLocator]:
    """A fresh session mounted on the merchant's page, once the frame said it is ready."""
    session_id = new_widget_session(site.services, "shop", amount_cents=4999)
    page.goto(f"{site.parent_url}/checkout?session={session_id}")
    page.wait_for_function("window.events.some(e => e.type === 'ready')")
    return session_id, page.frame_locator("iframe")


def fill_card(frame: FrameLocator | Page, number: str) -> None:
    frame.get_by_label("Card number").press_sequentially(number)
    frame.get_by_label("Expiry date").press_sequentially("1230")
    frame.get_by_label("Security code").press_sequentially("123")


def events(page: Page, kind: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = page.evaluate(
        "kind => window.events.filter(e => e.type === kind)", kind
    )
    return found


def session_status(site: Site, session_id: str) -> str:
    from payments.sessions import load_session

    with site.services.db.transaction() as tx:
        return load_session(tx, session_id, now=site.services.clock()).status


def test_a_card_paid_in_the_frame_reaches_on_success_with_the_result(
    page: Page, site: Site
) -> None:
    session_id, frame = open_checkout(page, site)
    number = frame.get_by_label("Card number")
    number.press_sequentially(APPROVED)
    expect(number).to_have_value("4242 4242 4242 4242")
    expect(frame.locator("#card_brand")).to_have_text("Visa")
    frame.get_by_label("Expiry date").press_sequentially("1230")
    expect(frame.get_by_label("Expiry date")).to_have_value("12 / 30")
    frame.get_by_label("Security code").press_sequentially("123")
    frame.get_by_role("button", name="Pay $49.99").click()
    page.wait_for_function("window.events.some(e => e.type === 'success')")
    [success] = events(page, "success")
    result = success["result"]
    assert set(result) == {
        "transaction_id",
        "confirmation_code",
        "card_brand",
        "card_last4",
        "amount_cents",
        "currency",
        "status",
    }
    assert result["transaction_id"]
    assert (result["card_brand"], result["card_last4"]) == ("visa", "4242")
    assert (result["amount_cents"], result["currency"], result["status"]) == (
        4999,
        "usd",
        "payment-success",
    )
    expect(frame.get_by_role("heading", name="Payment complete")).to_be_visible()
    assert re.fullmatch(r"\d{8}", result["confirmation_code"])
    expect(frame.locator("#success-detail")).to_have_text(
        f"Visa ending 4242. Confirmation code {result['confirmation_code']}."
    )
    expect(frame.locator("#card-form")).to_be_hidden()
    assert session_status(site, session_id) == "payment-success"
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator("iframe").screenshot(path=str(ARTIFACTS / "widget-success.png"))


def test_a_declined_card_shows_the_reason_and_try_again_leads_to_a_payment(
    page: Page, site: Site
) -> None:
    _, frame = open_checkout(page, site)
    fill_card(frame, DECLINED)
    frame.get_by_role("button", name="Pay $49.99").click()
    expect(frame.get_by_text("The card was declined.")).to_be_visible()
    page.wait_for_function("window.events.some(e => e.type === 'failure')")
    assert events(page, "failure")[0]["error"] == {
        "error_code": "card_declined",
        "error_message": "The card was declined.",
    }
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator("iframe").screenshot(path=str(ARTIFACTS / "widget-declined.png"))
    frame.get_by_role("button", name="Try again").click()
    number = frame.get_by_label("Card number")
    expect(number).to_be_focused()
    expect(number).to_have_value("")
    fill_card(frame, APPROVED)
    frame.get_by_role("button", name="Pay $49.99").click()
    page.wait_for_function("window.events.some(e => e.type === 'success')")
    expect(frame.get_by_role("heading", name="Payment complete")).to_be_visible()


def test_an_invalid_number_is_caught_in_the_form_before_anything_is_sent(
    page: Page, site: Site
) -> None:
    charges: list[Request] = []
    page.on("request", lambda r: charges.append(r) if r.url.endswith("/charge") else None)
    session_id, frame = open_checkout(page, site)
    fill_card(frame, "4242424242424241")
    frame.get_by_role("button", name="Pay $49.99").click()
    number = frame.get_by_label("Card number")
    expect(frame.locator("#card_number-error")).to_have_text(
        "This card number is not valid. Check the digits."
    )
    expect(number).to_have_attribute("aria-invalid", "true")
    expect(number).to_be_focused()
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator("iframe").screenshot(path=str(ARTIFACTS / "widget-invalid.png"))
    assert charges == []
    assert session_status(site, session_id) == "pending"


def test_the_payment_can_be_completed_with_the_keyboard_alone(page: Page, site: Site) -> None:
    _, frame = open_checkout(page, site)
    page.focus("#before")
    page.keyboard.press("Tab")
    expect(frame.get_by_label("Card number")).to_be_focused()
    page.keyboard.type(APPROVED)
    page.keyboard.press("Tab")
    expect(frame.get_by_label("Expiry date")).to_be_focused()
    page.keyboard.type("1230")
    page.keyboard.press("Tab")
    page.keyboard.type("123")
    page.keyboard.press("Tab")
    expect(frame.get_by_role("button", name="Pay $49.99")).to_be_focused()
    page.keyboard.press("Enter")
    page.wait_for_function("window.events.some(e => e.type === 'success')")
    expect(frame.locator("#success")).to_be_focused()


def test_the_frame_takes_its_contents_height_and_follows_theme_and_label_updates(
    page: Page, site: Site
) -> None:
    _, frame = open_checkout(page, site)
    page.wait_for_function("document.querySelector('iframe').style.height !== '360px'")
    button = frame.get_by_role("button", name="Pay $49.99")
    expect(button).to_have_css("background-color", "rgb(10, 20, 30)")
    page.evaluate("window.payment.updateLabels({ submit: 'Place {amount} order' })")
    expect(frame.get_by_role("button", name="Place $49.99 order")).to_be_visible()
    page.evaluate("window.payment.updateFields({ postal_code: true })")
    expect(frame.get_by_label("Billing ZIP code")).to_be_visible()


def test_messages_not_sent_by_the_frame_are_ignored(page: Page, site: Site) -> None:
    open_checkout(page, site)
    page.evaluate(
        """window.postMessage({ source: "paydial", type: "success",
                                result: { transaction_id: "forged" } }, "*")"""
    )
    page.wait_for_timeout(200)
    assert events(page, "success") == []


def test_the_demo_page_takes_a_test_payment_end_to_end(page: Page, site: Site) -> None:
    page.goto(f"{site.app_url}/demo")
    frame = page.frame_locator("iframe")
    expect(frame.get_by_text("Test mode: no money moves")).to_be_visible()
    fill_card(frame, APPROVED)
    frame.get_by_role("button", name="Pay $25.00").click()
    expect(frame.get_by_role("heading", name="Payment complete")).to_be_visible()
    expect(page.locator("#events")).to_contain_text('"card_last4": "4242"')


def open_frame(page: Page, site: Site) -> None:
    """A fresh session's frame opened on its own: enough for what the form checks itself."""
    session_id = new_widget_session(site.services, "shop", amount_cents=4999)
    page.goto(f"{site.app_url}/widget/{session_id}")


@pytest.mark.parametrize(
    ("number", "shown", "brand", "code_length"),
    [
        ("3095000000000000", "3095 0000 0000 0000", "Diners Club", "3"),
        ("30950000000000", "3095 000000 0000", "Diners Club", "3"),
        ("2221000000000009", "2221 0000 0000 0009", "Mastercard", "3"),
        ("2720000000000005", "2720 0000 0000 0005", "Mastercard", "3"),
        ("2220000000000000", "2220 0000 0000 0000", "", "3"),
        ("2721000000000004", "2721 0000 0000 0004", "", "3"),
        ("6221260000000000", "6221 2600 0000 0000", "Discover", "3"),
        ("6229250000000003", "6229 2500 0000 0003", "Discover", "3"),
        ("6221250000000001", "6221 2500 0000 0001", "", "3"),
        ("370000000000002", "3700 000000 00002", "American Express", "4"),
    ],
)
def test_the_frame_names_the_brand_at_the_edges_of_the_servers_ranges(
    page: Page, site: Site, number: str, shown: str, brand: str, code_length: str
) -> None:
    open_frame(page, site)
    field = page.get_by_label("Card number")
    field.press_sequentially(number)
    expect(field).to_have_value(shown)
    expect(page.locator("#card_brand")).to_have_text(brand)
    expect(page.get_by_label("Security code")).to_have_attribute("maxlength", code_length)


def test_an_amex_card_needs_four_code_digits_in_the_form_and_pays_with_them(
    page: Page, site: Site
) -> None:
    _, frame = open_checkout(page, site)
    fill_card(frame, "378282246310005")
    expect(frame.locator("#card_brand")).to_have_text("American Express")
    frame.get_by_role("button", name="Pay $49.99").click()
    code = frame.get_by_label("Security code")
    expect(frame.locator("#cvc-error")).to_have_text("The security code is 4 digits for this card.")
    expect(code).to_be_focused()
    code.press_sequentially("45")
    expect(code).to_have_value("1234")
    frame.get_by_role("button", name="Pay $49.99").click()
    page.wait_for_function("window.events.some(e => e.type === 'success')")
    assert events(page, "success")[0]["result"]["card_brand"] == "amex"
    expect(frame.locator("#success-detail")).to_contain_text("American Express ending 0005")


def test_a_luhn_invalid_number_at_a_range_edge_is_refused_and_the_valid_one_pays(
    page: Page, site: Site
) -> None:
    charges: list[Request] = []
    page.on("request", lambda r: charges.append(r) if r.url.endswith("/charge") else None)
    session_id, frame = open_checkout(page, site)
    fill_card(frame, "2720000000000006")
    expect(frame.locator("#card_brand")).to_have_text("Mastercard")
    frame.get_by_role("button", name="Pay $49.99").click()
    expect(frame.locator("#card_number-error")).to_have_text(
        "This card number is not valid. Check the digits."
    )
    assert charges == []
    assert session_status(site, session_id) == "pending"
    number = frame.get_by_label("Card number")
    number.press("Backspace")
    number.press_sequentially("5")
    frame.get_by_role("button", name="Pay $49.99").click()
    page.wait_for_function("window.events.some(e => e.type === 'success')")
    assert events(page, "success")[0]["result"]["card_brand"] == "mastercard"
    expect(frame.locator("#success-detail")).to_contain_text("Mastercard ending 0005")


@pytest.mark.parametrize(
    ("number", "message"),
    [
        ("400000000000006", "The card number has the wrong number of digits."),
        ("3095000000000000", "Diners Club cards are not accepted here."),
    ],
)
def test_a_length_the_brand_never_has_or_a_brand_not_accepted_is_refused_in_the_form(
    page: Page, site: Site, number: str, message: str
) -> None:
    charges: list[Request] = []
    page.on("request", lambda r: charges.append(r) if r.url.endswith("/charge") else None)
    open_frame(page, site)
    fill_card(page, number)
    page.get_by_role("button", name="Pay $49.99").click()
    expect(page.locator("#card_number-error")).to_have_text(message)
    assert charges == []


def failed_checkout(page: Page, site: Site, number: str) -> FrameLocator:
    """A fresh checkout paid with `number`, once the frame has reported a failure."""
    _, frame = open_checkout(page, site)
    fill_card(frame, number)
    frame.get_by_role("button", name="Pay $49.99").click()
    page.wait_for_function("window.events.some(e => e.type === 'failure')")
    return frame


def assert_refused(page: Page, frame: FrameLocator, code: str, message: str) -> None:
    """The frame says why with no way to retry, and onFailure got the code and the message."""
    expect(frame.get_by_text(message)).to_be_visible()
    expect(frame.get_by_role("button", name="Try again")).to_be_hidden()
    assert events(page, "failure")[-1]["error"] == {"error_code": code, "error_message": message}
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator("iframe").screenshot(path=str(ARTIFACTS / f"widget-{code.replace('_', '-')}.png"))


def test_card_testing_in_the_frame_is_stopped_with_a_clear_message_and_on_failure(
    page: Page, sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The default limits, on an app of its own: the other tests' declines do not count here."""
    charges: list[int] = []
    page.on("response", lambda r: charges.append(r.status) if r.url.endswith("/charge") else None)
    declining = ["4000000000000002", "4000000000009995", "4000000000000127", "4000000000000069"]
    with running_site(_database_copy(sqlite_template, tmp_path_factory)) as guarded:
        for number in declining * 3:
            frame = failed_checkout(page, guarded, number)
            if charges[-1] == 429:
                break
        assert charges.count(402) <= 10 and charges[-1] == 429
        message = "Too many declined payments from this network. Please try again later."
        assert_refused(page, frame, "rate_limited", message)


def test_a_merchant_paused_by_the_decline_breaker_shows_why_and_on_failure_says_charges_paused(
    page: Page, sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Two declines of two charges trip a breaker this small; the third card is not even tried."""
    charges: list[int] = []
    page.on("response", lambda r: charges.append(r.status) if r.url.endswith("/charge") else None)
    small = {"widget_breaker_min_attempts": 2}
    with running_site(_database_copy(sqlite_template, tmp_path_factory), **small) as guarded:
        for number in (DECLINED, "4000000000009995", APPROVED):
            frame = failed_checkout(page, guarded, number)
        assert charges == [402, 402, 429]
        assert_refused(page, frame, "charges_paused", PAUSED_MESSAGE)


def test_a_refused_origin_reaches_on_failure_and_the_frame_says_why(page: Page, site: Site) -> None:
    with site.services.db.transaction() as tx:
        create_project(tx, "strict", now=site.services.clock())
    set_project(site.services, "strict", widget={"allowed_origins": ["https://shop.example"]})
    session_id = new_widget_session(site.services, "strict")
    page.goto(f"{site.parent_url}/checkout?session={session_id}")
    page.wait_for_function("window.events.some(e => e.type === 'failure')")

    assert events(page, "failure") == [
        {
            "type": "failure",
            "error": {
                "error_code": "origin_not_allowed",
                "error_message": "This payment form cannot be embedded on that site.",
            },
        }
    ]
    frame = page.frame_locator("iframe")
    expect(frame.get_by_text("This payment form cannot be embedded on that site.")).to_be_visible()
    assert events(page, "ready") == []


def test_a_frame_that_cannot_load_reaches_on_failure_after_the_ready_handshake_fails(
    page: Page, site: Site
) -> None:
    nothing_there = f"http://127.0.0.1:{free_port()}"
    session_id = new_widget_session(site.services, "shop")
    page.goto(f"{site.parent_url}/checkout?session={session_id}&base={nothing_there}")
    page.wait_for_function("window.events.some(e => e.type === 'failure')")

    assert events(page, "failure")[0]["error"] == {
        "error_code": "frame_unavailable",
        "error_message": "The payment form could not be loaded.",
    }
    assert events(page, "ready") == []


def test_the_demo_page_keeps_working_after_allowed_origins_is_set(
    page: Page, sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with running_site(_database_copy(sqlite_template, tmp_path_factory)) as own:
        set_project(own.services, "demo", widget={"allowed_origins": ["https://shop.example"]})
        page.goto(f"{own.app_url}/demo")
        frame = page.frame_locator("iframe")
        fill_card(frame, APPROVED)
        frame.get_by_role("button", name="Pay $25.00").click()
        expect(frame.get_by_role("heading", name="Payment complete")).to_be_visible()
        expect(page.locator("#events")).to_contain_text('"card_last4": "4242"')


def test_a_locked_out_card_is_explained_in_the_frame_and_reaches_on_failure(
    page: Page, sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with running_site(
        _database_copy(sqlite_template, tmp_path_factory), card_failure_limit=2
    ) as guarded:
        session_id, frame = open_checkout(page, guarded)
        for tries in (1, 2):
            fill_card(frame, DECLINED)
            frame.get_by_role("button", name="Pay $49.99").click()
            page.wait_for_function(
                f"window.events.filter(e => e.type === 'failure').length >= {tries}"
            )
            frame.get_by_role("button", name="Try again").click()
        fill_card(frame, DECLINED)
        frame.get_by_role("button", name="Pay $49.99").click()
        page.wait_for_function("window.events.filter(e => e.type === 'failure').length >= 3")

        message = (
            "This card has failed too many times recently, so it is blocked for now. "
            "Please use a different card, or try again later."
        )
        assert events(page, "failure")[-1]["error"] == {
            "error_code": "velocity_limited",
            "error_message": message,
        }
        expect(frame.get_by_text(message)).to_be_visible()
        ARTIFACTS.mkdir(exist_ok=True)
        page.locator("iframe").screenshot(path=str(ARTIFACTS / "widget-velocity-limited.png"))
        frame.get_by_role("button", name="Try again").click()  # another card still may pay
        fill_card(frame, APPROVED)
        frame.get_by_role("button", name="Pay $49.99").click()
        page.wait_for_function("window.events.some(e => e.type === 'success')")
        assert session_status(guarded, session_id) == "payment-success"


def test_a_canadian_postal_code_is_accepted_in_the_frame_when_the_project_serves_canada(
    page: Page, site: Site
) -> None:
    with site.services.db.transaction() as tx:
        create_project(tx, "maple", now=site.services.clock())
    set_project(site.services, "maple", require_postal_code=True, callback_countries=["US", "CA"])
    charges: list[Request] = []
    page.on("request", lambda r: charges.append(r) if r.url.endswith("/charge") else None)
    session_id = new_widget_session(site.services, "maple", amount_cents=4999)
    page.goto(f"{site.parent_url}/checkout?session={session_id}")
    page.wait_for_function("window.events.some(e => e.type === 'ready')")
    frame = page.frame_locator("iframe")
    fill_card(frame, APPROVED)
    postal = frame.get_by_label("Billing ZIP code")
    postal.press_sequentially("K1A 0B")
    frame.get_by_role("button", name="Pay $49.99").click()
    expect(frame.locator("#postal_code-error")).to_have_text(
        "Enter a US ZIP code (12345 or 12345-6789) or a Canadian postal code (A1A 1A1)."
    )
    expect(postal).to_be_focused()
    assert charges == []

    postal.press_sequentially("1")
    frame.get_by_role("button", name="Pay $49.99").click()
    page.wait_for_function("window.events.some(e => e.type === 'success')")
    assert session_status(site, session_id) == "payment-success"
