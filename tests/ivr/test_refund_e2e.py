"""Done means: a phone payment refunded by half with one API call; the gateway holds one refund,
the merchant's webhook says so, and the session shows what was refunded.

The caller pays by keypad through the Twilio-behaving client; Stripe's official SDK talks to
localstripe; the webhook goes to a real HTTP server standing in for the merchant.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import stripe
from flask.testing import FlaskClient
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from ivr.phone import Phone, ScriptedKeypad
from payments.outbox import SIGNATURE_HEADER, signature_header
from payments.services import Services
from tests.conftest import set_project
from tests.ivr.conftest import APPROVED, CVV, EXPIRY
from tests.ivr.test_call_real_gateway import stripe_sandbox  # noqa: F401  # a fixture
from tests.leakscan import LeakScan

WAIT = 60  # generous for a loaded machine; the wait ends on the webhook's arrival


class Merchant:
    """The merchant's webhook endpoint: remembers each event and signals a refund's arrival."""

    def __init__(self, server: HTTPServer) -> None:
        self.events: list[tuple[dict[str, Any], str, bytes]] = []
        self.refunded = threading.Event()
        server.expect_request("/hooks", method="POST").respond_with_handler(self._hook)

    def _hook(self, request: Request) -> Response:
        body = request.get_data()
        event = json.loads(body)
        self.events.append((event, request.headers.get(SIGNATURE_HEADER, ""), body))
        if event.get("event") == "refund-succeeded":
            self.refunded.set()
        return Response(status=200)


@pytest.fixture
def merchant_hooks(
    request: pytest.FixtureRequest, services: Services, leak_scan: LeakScan
) -> Iterator[tuple[Merchant, str]]:
    server = HTTPServer(threaded=True)
    server.start()
    secret = set_project(services, "acme", webhook_url=server.url_for("/hooks")).webhook_secret
    set_project(services, "acme", webhook_events=["refund-succeeded"])
    assert secret is not None
    yield Merchant(server), secret
    for received, _ in server.log:
        leak_scan.check("webhook body", request.node.nodeid, received.get_data(as_text=True))
    server.stop()


def test_a_phone_payment_refunded_by_half_shows_one_refund_everywhere(
    stripe_sandbox: None,  # noqa: F811
    merchant_hooks: tuple[Merchant, str],
    localstripe_url: str,
    client: FlaskClient,
    merchant: dict[str, str],
    new_session: Callable[..., dict[str, Any]],
    phone: Callable[..., Phone],
    read_session: Callable[[str], dict[str, Any]],
) -> None:
    hooks, secret = merchant_hooks
    created = new_session(description=None, amount="150.00")  # localstripe refuses descriptions
    session_id = created["session_id"]
    call = phone(to=created["sip_uri"]).call(ScriptedKeypad([APPROVED + "#", EXPIRY, CVV, "1"]))
    assert read_session(session_id)["status"] == "payment-success", call.heard

    response = client.post(
        f"/v1/sessions/{session_id}/refunds",
        json={"amount": "75.00", "reason": "half the order"},
        headers={"Authorization": merchant["test"], "Idempotency-Key": "refund-half"},
    )
    assert response.status_code == 201, response.get_json()
    assert hooks.refunded.wait(WAIT), "the merchant never heard of the refund"

    [(event, signature, body)] = [
        e for e in hooks.events if e[0].get("event") == "refund-succeeded"
    ]
    timestamp = int(signature.split(",")[0].removeprefix("t="))
    assert signature == signature_header(secret, body, timestamp)
    assert event["refund"]["amount"] == "75.00" and event["amount_refunded"] == "75.00"
    session = read_session(session_id)
    assert session["status"] == "payment-success"
    assert (session["amount"], session["amount_refunded"]) == ("150.00", "75.00")
    [refund] = session["refunds"]
    assert refund["status"] == "succeeded" and refund["reason"] == "half the order"

    intent = session["processor"]["stripe_payment_intent_id"]
    gateway = stripe.StripeClient("sk_test_paydial", base_addresses={"api": localstripe_url})
    at_stripe = gateway.v1.refunds.list(params={"payment_intent": intent}).data
    assert [(r.id, r.amount) for r in at_stripe] == [(refund["gateway_refund_id"], 7500)]
