"""Refunds of an Authorize.net payment through the API, the core and the official SDK.

A refund request asks the gateway first whether it would refund the payment now: Authorize.net
refunds settled payments only, so an unsettled one must be voided instead, and the request answers
409 saying so with nothing recorded or sent. A refund whose answer times out is found by the sweep
and never sent twice. The session is paid through the SDK against the local server speaking
Authorize.net's XML API; the refund's job waits in the queue (tests/ops/conftest.py `QueuedJobs`)
until the test runs it, as a worker would.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient
from lxml import etree
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from gateways.base import short_reference
from payments.attempts import pay
from payments.model import Gateway, PaymentMode
from payments.refunds import reconcile_operations, run_operation
from payments.services import Services
from tests.conftest import Clock
from tests.gateways.test_after_payment import accepted, anet_server
from tests.gateways.test_authorizenet_gateway import anet, first, serve, xml_of
from tests.gateways.test_sessions_through_sdks import (
    CARD,
    anet_credentials,
    open_session,  # noqa: F401  # a fixture
)
from tests.ops.conftest import QueuedJobs

# The runner's gateway timeout in the test that loses an answer: long enough for a loaded
# machine's round trip, short enough to wait out. The gateway's late answer waits on an event.
RUNNER_TIMEOUT = 3.0
WAIT = 60


@pytest.fixture
def shop(make_key: Callable[..., str], open_session: Callable[..., str]) -> dict[str, str]:  # noqa: F811
    """Auth headers for project 'shop' (open_session creates it)."""
    return {"Authorization": f"Bearer {make_key('shop')}"}


@pytest.fixture
def paid_at_authorizenet(
    services: Services,
    httpserver: HTTPServer,
    open_session: Callable[..., str],  # noqa: F811
) -> Callable[[Callable[[Request], Response]], tuple[str, list[dict[str, Any]]]]:
    """A session paid by authCaptureTransaction at a server answering with `answer`; returns its
    id and what the server was sent."""

    def make(answer: Callable[[Request], Response]) -> tuple[str, list[dict[str, Any]]]:
        seen = serve(httpserver, answer)
        session_id = open_session(
            Gateway.AUTHORIZENET, PaymentMode.CHARGE, anet_credentials(httpserver)
        )
        assert pay(services, session_id, CARD).approved
        return session_id, seen

    return make


def kinds(seen: list[dict[str, Any]]) -> list[str]:
    """What was asked of the gateway, in order: the request's root, or its transaction type."""
    asked = [xml_of(request["body"]) for request in seen]
    return [
        next(iter(root.xpath("//*[local-name()='transactionType']/text()")), None)
        or etree.QName(root).localname
        for root in asked
    ]


def test_refunding_an_unsettled_authorizenet_payment_is_a_409_naming_the_void_and_sends_nothing(
    client: FlaskClient,
    queued: QueuedJobs,
    shop: dict[str, str],
    paid_at_authorizenet: Callable[..., tuple[str, list[dict[str, Any]]]],
) -> None:
    session_id, seen = paid_at_authorizenet(anet_server("capturedPendingSettlement"))

    response = client.post(
        f"/v1/sessions/{session_id}/refunds", json={"amount": "5.00"}, headers=shop
    )

    assert response.status_code == 409
    detail = response.get_json()["detail"]
    assert "void it instead" in detail and "/void" in detail
    assert kinds(seen) == ["authCaptureTransaction", "getTransactionDetailsRequest"]
    assert client.get(f"/v1/sessions/{session_id}/refunds", headers=shop).get_json()["data"] == []
    assert queued.operations == []
    voided = client.post(f"/v1/sessions/{session_id}/void", headers=shop)  # as it says
    assert voided.status_code == 202


def test_a_settled_authorizenet_payment_passes_the_check_and_is_refunded_once(
    client: FlaskClient,
    services: Services,
    queued: QueuedJobs,
    shop: dict[str, str],
    paid_at_authorizenet: Callable[..., tuple[str, list[dict[str, Any]]]],
) -> None:
    session_id, seen = paid_at_authorizenet(anet_server("settledSuccessfully"))

    response = client.post(
        f"/v1/sessions/{session_id}/refunds", json={"amount": "7.00"}, headers=shop
    )
    assert response.status_code == 201, response.get_json()
    [operation_id] = queued.operations
    run_operation(services, operation_id)

    [refund] = client.get(f"/v1/sessions/{session_id}/refunds", headers=shop).get_json()["data"]
    assert (refund["status"], refund["gateway_refund_id"]) == ("succeeded", "60200")
    assert kinds(seen) == [
        "authCaptureTransaction",
        "getTransactionDetailsRequest",  # the request's check
        "getTransactionDetailsRequest",  # the refund's own read of the card's last four
        "refundTransaction",
    ]
    sent = xml_of(seen[-1]["body"])
    invoice = sent.xpath("//*[local-name()='invoiceNumber']/text()")
    assert invoice == [short_reference(f"pd-{session_id}-refund-1")]


def test_when_authorizenet_cannot_be_asked_the_refund_is_a_503_and_nothing_is_recorded(
    client: FlaskClient,
    queued: QueuedJobs,
    shop: dict[str, str],
    paid_at_authorizenet: Callable[..., tuple[str, list[dict[str, Any]]]],
) -> None:
    settled = anet_server("settledSuccessfully")
    gateway_down = [True]

    def answer(request: Request) -> Response:
        asked = etree.QName(xml_of(request.get_data())).localname
        if gateway_down[0] and asked == "getTransactionDetailsRequest":
            return Response("Service Unavailable", status=503)
        return settled(request)  # type: ignore[no-any-return]

    session_id, _ = paid_at_authorizenet(answer)
    headers = {**shop, "Idempotency-Key": "refund-order-7"}
    url = f"/v1/sessions/{session_id}/refunds"

    refused = client.post(url, json={"amount": "5.00"}, headers=headers)

    assert refused.status_code == 503
    assert int(refused.headers["Retry-After"]) > 0
    detail = refused.get_json()["detail"]
    assert "authorizenet could not say whether the payment has settled" in detail
    assert client.get(url, headers=shop).get_json()["data"] == []
    assert queued.operations == []
    gateway_down[0] = False
    retried = client.post(url, json={"amount": "5.00"}, headers=headers)  # the same key
    assert retried.status_code == 201, retried.get_json()
    assert retried.headers.get("Idempotent-Replayed") != "true"


def test_a_refund_whose_answer_times_out_is_found_by_the_sweep_and_never_sent_twice(
    client: FlaskClient,
    services: Services,
    queued: QueuedJobs,
    clock: Clock,
    shop: dict[str, str],
    paid_at_authorizenet: Callable[..., tuple[str, list[dict[str, Any]]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    invoices: list[str] = []  # the refunds Authorize.net received, by invoice number
    listing_fails = [1]  # the look-up right after the timeout cannot say either
    runner_gave_up = threading.Event()

    def answer(request: Request) -> Response:
        body = xml_of(request.get_data())
        if first(body, "transactionType") == "refundTransaction":
            invoices.append(first(body, "invoiceNumber") or "")
            runner_gave_up.wait(WAIT)  # the refund is made; its answer comes too late
            return anet(accepted("60200"))
        if etree.QName(body).localname == "getUnsettledTransactionListRequest" and listing_fails[0]:
            listing_fails[0] -= 1
            return Response("Service Unavailable", status=503)
        known = invoices[0] if invoices else None
        return anet_server("settledSuccessfully", unsettled_invoice=known)(request)  # type: ignore[no-any-return]

    session_id, seen = paid_at_authorizenet(answer)
    url = f"/v1/sessions/{session_id}/refunds"
    assert client.post(url, json={"amount": "7.00"}, headers=shop).status_code == 201
    [operation_id] = queued.operations
    usual = services.settings.gateway_timeout_seconds
    monkeypatch.setattr(services.settings, "gateway_timeout_seconds", RUNNER_TIMEOUT)
    run_operation(services, operation_id)
    runner_gave_up.set()
    monkeypatch.setattr(services.settings, "gateway_timeout_seconds", usual)
    [lost] = client.get(url, headers=shop).get_json()["data"]
    assert lost["status"] == "pending" and lost["error"] is None

    clock.advance(minutes=1)
    assert reconcile_operations(services) == 1

    [found] = client.get(url, headers=shop).get_json()["data"]
    assert (found["status"], found["gateway_refund_id"]) == ("succeeded", "60200")
    session = client.get(f"/v1/sessions/{session_id}", headers=shop).get_json()
    assert session["amount_refunded"] == "7.00"
    assert kinds(seen).count("refundTransaction") == 1
    assert invoices == [short_reference(f"pd-{session_id}-refund-1")]
