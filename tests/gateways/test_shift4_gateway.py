"""Shift4: the official SDK against a local server speaking its JSON API."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from gateways import build_gateway
from gateways.base import (
    CardDeclined,
    GatewayConfigurationError,
    GatewayOutcomeUnknown,
    GatewayUnavailable,
    NotVoidable,
)
from gateways.shift4 import Shift4Gateway
from tests.gateways.gateway_helpers import (
    CLIENT_TIMEOUT,
    make_look_up,
    make_request,
    recorder,
    stall,
)

CHARGE = {
    "id": "char_9kQx",
    "objectType": "charge",
    "amount": 1999,
    "currency": "USD",
    "status": "successful",
    "captured": True,
    "card": {"id": "card_1", "last4": "4242", "brand": "Visa"},
}


def s4(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")


def make_shift4(url: str, timeout: float = 5.0) -> Shift4Gateway:
    gateway = build_gateway(
        "shift4",
        {"secret_key": "sk_test_s4", "api_base": url},
        environment="test",
        timeout=timeout,
    )
    assert isinstance(gateway, Shift4Gateway)
    return gateway


def serve(httpserver: HTTPServer, path: str, answer: Any) -> list[dict[str, Any]]:
    fixed = isinstance(answer, Response)  # a Response is itself callable (WSGI), so ask first
    seen, handler = recorder((lambda _: answer) if fixed else answer)
    httpserver.expect_request(path).respond_with_handler(handler)
    return seen


def test_a_charge_sends_amount_card_and_idempotency_key(httpserver: HTTPServer) -> None:
    seen = serve(httpserver, "/charges", s4(CHARGE))

    result = make_shift4(httpserver.url_for("")).charge(make_request(key="pd-sess1-1"))

    sent = json.loads(seen[0]["body"])
    assert sent["amount"] == 1999
    assert sent["currency"] == "USD"
    assert sent["captured"] is True
    assert sent["card"]["number"] == "4242424242424242"
    assert sent["card"]["cvc"] == "987"
    assert (sent["card"]["expMonth"], sent["card"]["expYear"]) == ("12", "2031")
    assert sent["card"]["addressZip"] == "94107"
    assert sent["metadata"]["paydial_idempotency_key"] == "pd-sess1-1"
    assert seen[0]["headers"]["Idempotency-Key"] == "pd-sess1-1"
    assert seen[0]["headers"]["Authorization"].startswith("Basic ")
    assert result.outcome == "captured"
    assert result.processor == {
        "shift4_charge_id": "char_9kQx",
        "shift4_customer_id": None,
        "shift4_card_id": None,
    }


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("card_declined", "card_declined"),
        ("insufficient_funds", "insufficient_funds"),
        ("incorrect_cvc", "incorrect_cvc"),
        ("expired_card", "expired_card"),
        ("incorrect_zip", "incorrect_zip"),
        ("invalid_number", "invalid_number"),
        ("processing_error", "processing_error"),
    ],
)
def test_card_errors_map_to_normalized_reasons(
    httpserver: HTTPServer, code: str, reason: str
) -> None:
    error = {"type": "card_error", "code": code, "message": "Declined.", "chargeId": "char_d"}
    serve(httpserver, "/charges", s4({"error": error}, status=402))

    with pytest.raises(CardDeclined) as caught:
        make_shift4(httpserver.url_for("")).charge(make_request())

    assert caught.value.reason == reason


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (
            s4({"error": {"type": "invalid_request", "message": "Invalid API key"}}, 401),
            GatewayConfigurationError,
        ),
        (s4({"error": {"type": "gateway_error", "message": "boom"}}, 500), GatewayOutcomeUnknown),
        (Response("<html>Bad Gateway</html>", status=502), GatewayUnavailable),
        (Response("<html>half a charge", status=200), GatewayOutcomeUnknown),
    ],
)
def test_http_failures_and_non_json_bodies_map_to_the_error_tree(
    httpserver: HTTPServer, answer: Response, error: type[Exception]
) -> None:
    serve(httpserver, "/charges", answer)

    with pytest.raises(error):
        make_shift4(httpserver.url_for("")).charge(make_request())


def test_a_refused_connection_is_unavailable(refused_url: str) -> None:
    with pytest.raises(GatewayUnavailable):
        make_shift4(refused_url).charge(make_request())


def test_a_stalled_charge_times_out_as_an_unknown_outcome(httpserver: HTTPServer) -> None:
    serve(httpserver, "/charges", stall(s4(CHARGE)))

    with pytest.raises(GatewayOutcomeUnknown):
        make_shift4(httpserver.url_for(""), timeout=CLIENT_TIMEOUT).charge(make_request())


def test_tokenize_creates_a_customer_holding_the_card(httpserver: HTTPServer) -> None:
    seen = serve(
        httpserver, "/customers", s4({"id": "cust_5", "defaultCardId": "card_5", "cards": []})
    )

    result = make_shift4(httpserver.url_for("")).tokenize(make_request(key="pd-tok-1"))

    sent = json.loads(seen[0]["body"])
    assert sent["card"]["number"] == "4242424242424242"
    assert seen[0]["headers"]["Idempotency-Key"] == "pd-tok-1"
    assert result.outcome == "tokenized"
    assert result.processor["shift4_customer_id"] == "cust_5"
    assert result.processor["shift4_card_id"] == "card_5"


def test_reconcile_finds_the_charge_by_the_key_in_its_metadata(httpserver: HTTPServer) -> None:
    tagged = {**CHARGE, "metadata": {"paydial_idempotency_key": "pd-lost-1"}}
    serve(httpserver, "/charges", s4({"list": [tagged], "hasMore": False}))

    result = make_shift4(httpserver.url_for("")).reconcile(make_look_up("pd-lost-1"))

    assert result is not None
    assert result.transaction_id == "char_9kQx"


def test_reconcile_answers_none_when_nothing_carries_the_key(httpserver: HTTPServer) -> None:
    serve(httpserver, "/charges", s4({"list": [CHARGE], "hasMore": False}))
    serve(httpserver, "/customers", s4({"list": [], "hasMore": False}))

    assert make_shift4(httpserver.url_for("")).reconcile(make_look_up("pd-lost-2")) is None


def test_reconcile_pages_past_more_than_a_hundred_newer_charges(httpserver: HTTPServer) -> None:
    """Shift4's list pages with `startingAfterId`, newest first."""
    charges = [{**CHARGE, "id": f"char_{n}", "metadata": {}} for n in range(130)]
    charges[117]["metadata"] = {"paydial_idempotency_key": "pd-buried-1"}

    def page(request: Request) -> Response:
        after = request.args.get("startingAfterId")
        start = 0 if after is None else int(after.split("_")[1]) + 1
        limit = int(request.args.get("limit", "10"))
        chunk = charges[start : start + limit]
        return s4({"list": chunk, "hasMore": start + limit < len(charges)})

    seen = serve(httpserver, "/charges", page)

    result = make_shift4(httpserver.url_for("")).reconcile(make_look_up("pd-buried-1"))

    assert result is not None and result.transaction_id == "char_117"
    assert len(seen) == 2


@pytest.mark.parametrize("cents", [1999, 700])  # the whole charge, then a part of it
def test_refund_posts_the_amount_with_our_idempotency_key(
    httpserver: HTTPServer, cents: int
) -> None:
    refund = {"id": "ref_1", "amount": cents}
    refunded = {**CHARGE, "refunded": cents == CHARGE["amount"], "refunds": [refund]}
    seen = serve(httpserver, "/charges/char_9kQx/refund", s4(refunded))

    reversal = make_shift4(httpserver.url_for("")).refund(
        "char_9kQx", cents, idempotency_key="pd-s-1-refund"
    )

    assert json.loads(seen[0]["body"]) == {
        "amount": cents,
        "metadata": {"paydial_idempotency_key": "pd-s-1-refund"},
    }
    assert seen[0]["headers"]["Idempotency-Key"] == "pd-s-1-refund"
    assert (reversal.kind, reversal.reversal_id, reversal.amount_cents) == (
        "refund",
        "ref_1",
        cents,
    )


def test_a_captured_charge_cannot_be_voided_and_an_uncaptured_one_is_released(
    httpserver: HTTPServer,
) -> None:
    serve(httpserver, "/charges/char_9kQx", s4(CHARGE))
    held = {**CHARGE, "id": "char_auth", "captured": False}
    serve(httpserver, "/charges/char_auth", s4(held))
    released = serve(httpserver, "/charges/char_auth/refund", s4({**held, "refunds": []}))
    gateway = make_shift4(httpserver.url_for(""))

    with pytest.raises(NotVoidable):
        gateway.void("char_9kQx", idempotency_key="pd-s-1-void")
    assert gateway.void("char_auth", idempotency_key="pd-s-2-void").kind == "void"
    assert released[0]["headers"]["Idempotency-Key"] == "pd-s-2-void"
