"""The hosted frame, its security headers, the loader script, the session read, and /demo."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from html.parser import HTMLParser

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from gateways.cards import BRANDS, Brand, BrandRules, IinRange
from payments.services import Services
from tests.conftest import set_project, store_live_credentials

PARENT = "https://shop.example"


class Elements(HTMLParser):
    """Every start tag and its attributes, so tests assert on the document, not on substrings."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def by_id(self, element_id: str) -> dict[str, str | None]:
        return next(attrs for _, attrs in self.tags if attrs.get("id") == element_id)

    def field(self, name: str) -> dict[str, str | None]:
        return next(attrs for _, attrs in self.tags if attrs.get("data-field") == name)


def csp(response: TestResponse) -> dict[str, str]:
    """The Content-Security-Policy as directive -> value."""
    directives = [d.strip() for d in response.headers["Content-Security-Policy"].split(";")]
    return {d.split(" ", 1)[0]: d.split(" ", 1)[1] for d in directives if d}


def test_the_frame_is_served_under_a_strict_content_security_policy(
    client: FlaskClient, make_widget_session: Callable[..., str]
) -> None:
    response = client.get(f"/widget/{make_widget_session()}?origin={PARENT}")
    assert response.status_code == 200
    assert csp(response) == {
        "default-src": "'none'",
        "script-src": "'self'",
        "style-src": "'self'",
        "connect-src": "'self'",
        "img-src": "'self' data:",
        "form-action": "'self'",
        "base-uri": "'none'",
        "frame-ancestors": "*",
    }
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Cache-Control"] == "no-store"


def test_the_frame_has_no_inline_or_third_party_script(
    client: FlaskClient, make_widget_session: Callable[..., str]
) -> None:
    html = client.get(f"/widget/{make_widget_session()}").get_data(as_text=True)
    scripts = [attrs for tag, attrs in Elements(html).tags if tag == "script"]
    assert [s["src"] for s in scripts] == ["/widget/assets/frame.js"]
    assert not re.search(r"<script(?![^>]*\bsrc=)", html)
    assert " style=" not in html and "<style" not in html


def test_frame_ancestors_are_the_projects_allowed_origins(
    client: FlaskClient, services: Services, make_widget_session: Callable[..., str]
) -> None:
    sid = make_widget_session()
    set_project(services, "shop", widget={"allowed_origins": [PARENT, "https://chat.example"]})
    response = client.get(f"/widget/{sid}?origin={PARENT}")
    # a test session also allows Paydial's own origin, where the built-in /demo page runs
    assert csp(response)["frame-ancestors"] == f"{PARENT} https://chat.example http://localhost"
    root = Elements(response.get_data(as_text=True)).by_id("paydial")
    assert root["data-parent-origin"] == PARENT


def test_a_parent_origin_the_project_does_not_allow_is_refused(
    client: FlaskClient, services: Services, make_widget_session: Callable[..., str]
) -> None:
    sid = make_widget_session()
    set_project(services, "shop", widget={"allowed_origins": [PARENT]})
    response = client.get(f"/widget/{sid}?origin=https://evil.example")
    assert response.status_code == 403
    # no form, nothing to protect: shown in any frame, so the shopper reads why, and the page's
    # onFailure hears it (widget/assets/closed.js)
    assert csp(response)["frame-ancestors"] == "*"
    html = response.get_data(as_text=True)
    assert "data-csrf" not in html
    assert Elements(html).by_id("closed")["data-error-code"] == "origin_not_allowed"
    assert "This payment form cannot be embedded on that site." in html


@pytest.mark.parametrize("origin", ["javascript:alert(1)", "https://shop.example/path", "null"])
def test_a_parent_origin_that_is_not_an_origin_is_refused(
    client: FlaskClient, make_widget_session: Callable[..., str], origin: str
) -> None:
    response = client.get(f"/widget/{make_widget_session()}", query_string={"origin": origin})
    assert response.status_code == 403


def test_a_live_session_of_a_project_without_allowed_origins_refuses_framing(
    client: FlaskClient, services: Services, make_widget_session: Callable[..., str]
) -> None:
    make_widget_session()  # the project exists once it has a session
    store_live_credentials(services, "shop")
    sid = make_widget_session(environment="live")
    standalone = client.get(f"/widget/{sid}")
    assert standalone.status_code == 200
    assert csp(standalone)["frame-ancestors"] == "'none'"
    assert client.get(f"/widget/{sid}?origin={PARENT}").status_code == 403


def test_the_frame_shows_the_amount_labels_and_optional_fields_the_project_chose(
    client: FlaskClient, services: Services, make_widget_session: Callable[..., str]
) -> None:
    sid = make_widget_session(amount_cents=123456)
    plain = Elements(client.get(f"/widget/{sid}").get_data(as_text=True))
    assert "hidden" in plain.field("postal_code")
    assert "hidden" in plain.field("cardholder_name")
    set_project(
        services,
        "shop",
        display_name="Shop & Co",
        widget={
            "labels": {"submit": "Complete {amount} order"},
            "fields": {"cardholder_name": True, "postal_code": True},
            "theme": {"primary": "#123456"},
        },
    )
    html = client.get(f"/widget/{sid}").get_data(as_text=True)
    themed = Elements(html)
    assert "hidden" not in themed.field("postal_code")
    assert "hidden" not in themed.field("cardholder_name")
    assert themed.by_id("paydial")["data-theme"] == '{"primary": "#123456"}'
    assert "Complete $1,234.56 order</button>" in html
    assert "Shop &amp; Co" in html
    for name in ("card_number", "expiry", "cvc", "cardholder_name", "postal_code"):
        assert any(tag == "label" and a.get("for") == name for tag, a in themed.tags)
        assert themed.by_id(name)["aria-describedby"]


def test_the_frame_carries_the_servers_card_brand_table_and_the_brands_names(
    client: FlaskClient, make_widget_session: Callable[..., str]
) -> None:
    html = client.get(f"/widget/{make_widget_session()}").get_data(as_text=True)
    table = json.loads(Elements(html).by_id("paydial")["data-brands"] or "")
    assert all(set(rules) == {"name", "code", "ranges"} for rules in table.values())
    served = {
        Brand(brand): BrandRules(
            rules["name"],
            rules["code"],
            tuple(IinRange(low, high, tuple(lengths)) for low, high, lengths in rules["ranges"]),
        )
        for brand, rules in table.items()
    }
    assert served == BRANDS
    assert {brand: rules["name"] for brand, rules in table.items()} == {
        "visa": "Visa",
        "mastercard": "Mastercard",
        "amex": "American Express",
        "discover": "Discover",
        "jcb": "JCB",
        "diners": "Diners Club",
    }


def test_a_finished_session_shows_a_final_state_instead_of_the_form(
    client: FlaskClient, make_widget_session: Callable[..., str]
) -> None:
    sid = make_widget_session()
    token = re.search(r'data-csrf="(\w+)"', client.get(f"/widget/{sid}").get_data(as_text=True))
    assert token
    card = {"card_number": "4242424242424242", "exp_month": 1, "exp_year": 2031, "cvc": "123"}
    client.post(
        f"/v1/widget-sessions/{sid}/charge", json=card, headers={"X-Paydial-CSRF": token[1]}
    )
    html = client.get(f"/widget/{sid}").get_data(as_text=True)
    assert "This payment is complete." in html
    assert 'id="card-form"' not in html


def test_an_unknown_frame_is_a_404_page(client: FlaskClient) -> None:
    response = client.get("/widget/no-such-session")
    assert response.status_code == 404
    assert response.mimetype == "text/html"


def test_the_loader_script_is_javascript_that_defines_both_names(client: FlaskClient) -> None:
    with client.get("/widget/v1/widget.js") as response:
        assert response.status_code == 200
        assert response.mimetype in ("text/javascript", "application/javascript")
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        source = response.get_data(as_text=True)
    assert "global.Maven = api" in source and "global.Paydial = api" in source
    assert "event.origin" in source and "event.source" in source


def test_the_loader_is_immutable_under_its_content_hash_and_brief_without_one(
    client: FlaskClient,
) -> None:
    with client.get("/widget/v1/widget.js") as current:
        assert current.headers["Cache-Control"] == "public, max-age=300"
        link = current.headers["Link"]
        source = current.get_data()
    versioned = link.removeprefix("<").split(">;")[0]
    assert link.endswith('; rel="canonical"')
    assert versioned == f"/widget/v1/widget.{hashlib.sha256(source).hexdigest()[:16]}.js"
    with client.get(versioned) as response:
        assert response.status_code == 200
        assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert response.mimetype in ("text/javascript", "application/javascript")
        assert response.get_data() == source
    stale = client.get("/widget/v1/widget.0123456789abcdef.js")
    assert (stale.status_code, stale.headers["Location"]) == (302, versioned)
    assert stale.headers["Cache-Control"] == "public, max-age=300"


def test_the_session_read_gives_what_the_frame_renders_and_nothing_else(
    client: FlaskClient, services: Services, make_widget_session: Callable[..., str]
) -> None:
    sid = make_widget_session(amount_cents=990, description="One coffee")
    make_widget_session("rival")
    set_project(services, "shop", widget={"labels": {"try_again": "Retry"}})
    body = client.get(f"/v1/widget-sessions/{sid}").get_json()
    assert body["session_id"] == sid
    assert (body["amount_cents"], body["currency"]) == (990, "usd")
    assert body["description"] == "One coffee"
    assert (body["status"], body["mode"], body["environment"]) == ("pending", "charge", "test")
    assert body["merchant_name"] == "shop"
    assert body["labels"]["try_again"] == "Retry"
    assert body["labels"]["submit"] == "Pay $9.90"
    assert body["fields"] == {"cardholder_name": False, "postal_code": False}
    assert body["expires_at"] == "2026-11-21T12:05:00Z"
    assert not {"access_code", "caller", "memory", "callback", "processor", "project"} & set(body)


def test_the_demo_page_is_off_unless_the_app_enables_it(client: FlaskClient) -> None:
    assert client.get("/demo").status_code == 404


def test_the_demo_page_creates_a_test_session_and_mounts_the_widget(
    app: Flask, client: FlaskClient, make_project: Callable[..., str]
) -> None:
    make_project("demo")
    app.config["PAYDIAL_DEMO"] = True
    response = client.get("/demo")
    assert response.status_code == 200
    page = Elements(response.get_data(as_text=True))
    loader, script = [a["src"] for t, a in page.tags if t == "script"]
    assert script == "/widget/assets/demo.js"
    with client.get(loader) as versioned:  # the loader's immutable URL
        assert versioned.headers["Cache-Control"].endswith("immutable")
    assert csp(response)["frame-src"] == "'self'"
    sid = page.by_id("payment")["data-session-id"]
    session = client.get(f"/v1/widget-sessions/{sid}").get_json()
    assert (session["environment"], session["status"]) == ("test", "pending")
