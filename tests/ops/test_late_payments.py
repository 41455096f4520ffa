"""Money and status agree: no cancel while the gateway works, and a late payment is given back.

Stripe's official SDK talks to a local server speaking Stripe's wire format that holds the
PaymentIntent's answer until the test releases it, so the cancel lands while money is in flight.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qs

import pytest
from flask import Flask
from flask.testing import FlaskClient
from pytest_httpserver import HTTPServer
from sqlalchemy import select
from werkzeug import Request, Response

from api.frame import CSRF_HEADER, csrf_token
from gateways.base import Card
from payments.accounts import get_project_by_slug
from payments.attempts import pay
from payments.credentials import CREDENTIALS_PURPOSE, set_credentials
from payments.model import Environment, Gateway, Status
from payments.reversals import reverse_due
from payments.services import Services
from payments.sessions import load_session, transition
from payments.store import PaymentAttempt, SessionEvent, WebhookEvent
from tests.conftest import TEST_SECRET_KEY, Clock

APPROVED = Card(number="4242424242424242", exp_month=12, exp_year=2030, cvc="123")
INTENT = {
    "id": "pi_late1",
    "object": "payment_intent",
    "status": "succeeded",
    "payment_method": "pm_1",
    "latest_charge": {"id": "ch_late1", "object": "charge"},
}
WAIT = 60  # generous: a loaded machine is slow, and every wait below ends on an event


def stripe_json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")


class HeldStripe:
    """Stripe's wire format; the PaymentIntent's answer waits for `release`."""

    def __init__(self, server: HTTPServer) -> None:
        self.server = server
        self.arrived = threading.Event()
        self.released = threading.Event()
        self.refund_status = 200
        self.requests: list[tuple[str, dict[str, list[str]], str | None]] = []
        server.expect_request("/v1/payment_methods", method="POST").respond_with_json(
            {"id": "pm_1", "object": "payment_method", "type": "card"}
        )
        server.expect_request("/v1/payment_intents", method="POST").respond_with_handler(
            self._intent
        )
        server.expect_request("/v1/payment_intents/pi_late1/cancel").respond_with_handler(
            self._cancel
        )
        server.expect_request("/v1/refunds", method="POST").respond_with_handler(self._refund)

    def _seen(self, request: Request) -> None:
        form = parse_qs(request.get_data(as_text=True))
        self.requests.append((request.path, form, request.headers.get("Idempotency-Key")))

    def _intent(self, request: Request) -> Response:
        self.arrived.set()
        assert self.released.wait(WAIT)
        return stripe_json(INTENT)

    def _cancel(self, request: Request) -> Response:
        self._seen(request)
        error = {
            "type": "invalid_request_error",
            "code": "payment_intent_unexpected_state",
            "message": "You cannot cancel this PaymentIntent because it has a status of succeeded.",
        }
        return stripe_json({"error": error}, status=400)

    def _refund(self, request: Request) -> Response:
        self._seen(request)
        if self.refund_status != 200:
            return stripe_json({"error": {"type": "api_error", "message": "down"}}, 503)
        return stripe_json({"id": "re_late1", "object": "refund", "status": "succeeded"})

    @property
    def refunds(self) -> list[tuple[dict[str, list[str]], str | None]]:
        return [(form, key) for path, form, key in self.requests if path == "/v1/refunds"]


@pytest.fixture
def held(
    services: Services, merchant: dict[str, str], httpserver: HTTPServer
) -> Iterator[HeldStripe]:
    """acme's test-mode Stripe credentials point at the held server."""
    with services.db.transaction() as tx:
        set_credentials(
            tx,
            get_project_by_slug(tx, "acme"),
            Gateway.STRIPE,
            Environment.TEST,
            {"secret_key": "sk_test_held", "api_base": httpserver.url_for("")},
            sealer=services.sealer(CREDENTIALS_PURPOSE),
            now=services.clock(),
        )
    stripe = HeldStripe(httpserver)
    yield stripe
    stripe.released.set()


@pytest.fixture
def background() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield pool


def events(services: Services, session_id: str) -> list[tuple[str | None, str, str]]:
    with services.db.transaction() as tx:
        rows = tx.execute(
            select(SessionEvent.from_status, SessionEvent.to_status, SessionEvent.cause)
            .where(SessionEvent.session_id == session_id)
            .order_by(SessionEvent.id)
        )
        return [(a, b, c) for a, b, c in rows]


def attempt_of(services: Services, session_id: str) -> PaymentAttempt:
    with services.db.transaction() as tx:
        return tx.scalars(
            select(PaymentAttempt).where(PaymentAttempt.session_id == session_id)
        ).one()


def test_a_cancel_while_the_gateway_holds_the_payment_is_a_409_and_the_payment_decides(
    client: FlaskClient,
    services: Services,
    merchant: dict[str, str],
    new_session: Callable[..., str],
    held: HeldStripe,
    background: ThreadPoolExecutor,
) -> None:
    session_id = new_session(description=None)
    paying = background.submit(pay, services, session_id, APPROVED, attempt=1)
    assert held.arrived.wait(WAIT)

    cancel = client.post(
        f"/v1/sessions/{session_id}/cancel", headers={"Authorization": merchant["test"]}
    )
    held.released.set()
    outcome = paying.result(WAIT)

    assert cancel.status_code == 409
    assert "being processed" in cancel.get_json()["detail"]
    assert outcome.approved
    session = client.get(f"/v1/sessions/{session_id}", headers={"Authorization": merchant["test"]})
    assert session.get_json()["status"] == Status.PAYMENT_SUCCESS
    assert held.refunds == []


def test_the_widget_charge_and_a_cancel_race_the_same_way(
    app: Flask,
    client: FlaskClient,
    merchant: dict[str, str],
    held: HeldStripe,
    background: ThreadPoolExecutor,
) -> None:
    created = client.post(
        "/v1/widget-sessions",
        json={"project": "acme", "amount_cents": 1250, "mode": "charge", "gateway": "stripe"},
        headers={"Authorization": merchant["test"]},
    )
    session_id = created.get_json()["session_id"]
    frame = app.test_client()
    charge = background.submit(
        frame.post,
        f"/v1/widget-sessions/{session_id}/charge",
        json={"card_number": APPROVED.number, "exp_month": 12, "exp_year": 2030, "cvc": "123"},
        headers={CSRF_HEADER: csrf_token(TEST_SECRET_KEY, session_id)},
    )
    assert held.arrived.wait(WAIT)

    cancel = client.post(
        f"/v1/sessions/{session_id}/cancel", headers={"Authorization": merchant["test"]}
    )
    held.released.set()

    assert cancel.status_code == 409
    assert charge.result(WAIT).status_code == 200
    session = client.get(f"/v1/sessions/{session_id}", headers={"Authorization": merchant["test"]})
    assert session.get_json()["status"] == Status.PAYMENT_SUCCESS


def end_session_behind_the_payments_back(services: Services, session_id: str) -> None:
    """A race that slipped past the cancel check (the backstop's case): the session ends anyway."""
    with services.db.transaction() as tx:
        session = load_session(tx, session_id, now=services.clock(), for_update=True)
        transition(
            tx, session, Status.CANCELLED, cause="cancelled_by_merchant", now=services.clock()
        )


def test_a_payment_landing_on_a_cancelled_session_is_refunded_logged_and_reported(
    services: Services,
    hook_secret: str,
    new_session: Callable[..., str],
    held: HeldStripe,
    background: ThreadPoolExecutor,
) -> None:
    session_id = new_session(description=None)
    paying = background.submit(pay, services, session_id, APPROVED, attempt=1)
    assert held.arrived.wait(WAIT)
    end_session_behind_the_payments_back(services, session_id)
    held.released.set()
    outcome = paying.result(WAIT)

    assert not outcome.approved
    assert outcome.error_code == "payment_reversed"
    [(form, key)] = held.refunds
    assert form["payment_intent"] == ["pi_late1"] and form["amount"] == ["2500"]
    assert key == f"pd-{session_id}-1-refund"
    attempt = attempt_of(services, session_id)
    assert attempt.state == "reversed"
    assert (attempt.processor or {})["reversal"]["reversal_id"] == "re_late1"
    assert events(services, session_id)[-2:] == [
        ("cancelled", "cancelled", "late_payment_received"),
        ("cancelled", "cancelled", "payment_reversed"),
    ]
    with services.db.transaction() as tx:
        hook = tx.scalars(
            select(WebhookEvent).where(
                WebhookEvent.session_id == session_id, WebhookEvent.type == "payment-reversed"
            )
        ).one()
        body = json.loads(hook.payload)
    assert body["status"] == "cancelled"
    assert body["reversal"]["kind"] == "refund"
    assert body["reversal"]["transaction_id"] == "pi_late1"


def test_a_reversal_the_gateway_refuses_now_is_retried_by_the_sweep_with_the_same_key(
    services: Services,
    clock: Clock,
    new_session: Callable[..., str],
    held: HeldStripe,
    background: ThreadPoolExecutor,
) -> None:
    held.refund_status = 503
    session_id = new_session(description=None)
    paying = background.submit(pay, services, session_id, APPROVED, attempt=1)
    assert held.arrived.wait(WAIT)
    end_session_behind_the_payments_back(services, session_id)
    held.released.set()
    paying.result(WAIT)
    assert attempt_of(services, session_id).state == "reversing"

    held.refund_status = 200
    assert reverse_due(services) == 0  # not due before its pause
    clock.advance(minutes=2)
    assert reverse_due(services) == 1
    assert reverse_due(services) == 0

    assert attempt_of(services, session_id).state == "reversed"
    keys = {key for _, key in held.refunds}
    assert len(held.refunds) == 2 and keys == {f"pd-{session_id}-1-refund"}
