"""Stripe: the official SDK against localstripe, and against a local server for error shapes."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

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
    PaymentRequest,
)
from gateways.stripe import StripeGateway
from tests.gateways.gateway_helpers import (
    CLIENT_TIMEOUT,
    make_look_up,
    make_request,
    recorder,
    stall,
)
from tests.keepalive import keep_alive_server


def make_stripe(url: str, timeout: float = 5.0) -> StripeGateway:
    gateway = build_gateway(
        "stripe", {"secret_key": "sk_test_x", "api_base": url}, environment="test", timeout=timeout
    )
    assert isinstance(gateway, StripeGateway)
    return gateway


def stripe_json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")


PAYMENT_METHOD = {"id": "pm_1", "object": "payment_method", "type": "card"}
SUCCEEDED = {
    "id": "pi_1",
    "object": "payment_intent",
    "status": "succeeded",
    "payment_method": "pm_1",
    "latest_charge": {"id": "ch_1", "object": "charge", "receipt_url": "https://r.example/1"},
}


def card_error(code: str, decline_code: str | None = None) -> Response:
    error = {"type": "card_error", "code": code, "message": "Your card was declined."}
    if decline_code:
        error["decline_code"] = decline_code
    return stripe_json({"error": error}, status=402)


def serve_intent(
    httpserver: HTTPServer, answer: Callable[[Request], Response]
) -> list[dict[str, Any]]:
    httpserver.expect_request("/v1/payment_methods", method="POST").respond_with_json(
        PAYMENT_METHOD
    )
    seen, handler = recorder(answer)
    httpserver.expect_request("/v1/payment_intents", method="POST").respond_with_handler(handler)
    return seen


def local_request(number: str = "4242424242424242", **kwargs: Any) -> PaymentRequest:
    """localstripe rejects `description` on PaymentIntents and Customers, so leave it out."""
    return make_request(number, description=None, **kwargs)


class TestAgainstLocalstripe:
    def test_a_charge_is_captured_with_intent_charge_and_payment_method_ids(
        self, localstripe_url: str
    ) -> None:
        result = make_stripe(localstripe_url).charge(local_request(postal_code=None))

        assert result.outcome == "captured"
        assert result.transaction_id and result.transaction_id.startswith("pi_")
        assert result.processor["stripe_payment_intent_id"] == result.transaction_id
        assert (result.processor["stripe_charge_id"] or "").startswith("ch_")
        assert (result.processor["payment_method_id"] or "").startswith("pm_")
        assert (result.card_brand, result.card_last4) == ("visa", "4242")

    def test_tokenize_creates_a_customer_with_the_card_attached(self, localstripe_url: str) -> None:
        result = make_stripe(localstripe_url).tokenize(local_request(amount_cents=0))

        assert result.outcome == "tokenized"
        assert result.transaction_id is None
        assert (result.processor["stripe_customer_id"] or "").startswith("cus_")
        assert (result.processor["payment_method_id"] or "").startswith("pm_")

    def test_a_card_refused_at_attach_is_declined_when_tokenizing(
        self, localstripe_url: str
    ) -> None:
        with pytest.raises(CardDeclined) as caught:
            make_stripe(localstripe_url).tokenize(local_request("4000000000000002"))
        assert caught.value.reason == "card_declined"

    def test_a_card_refused_at_charge_is_declined(self, localstripe_url: str) -> None:
        with pytest.raises(CardDeclined):
            make_stripe(localstripe_url).charge(local_request("4000000000000341"))

    def test_reconcile_finds_the_charge_and_the_customer_by_idempotency_key(
        self, localstripe_url: str
    ) -> None:
        gateway = make_stripe(localstripe_url)
        charge, token = local_request(), local_request()
        charged, saved = gateway.charge(charge), gateway.tokenize(token)

        assert gateway.reconcile(charge.as_look_up()) == charged
        assert gateway.reconcile(token.as_look_up()) == saved
        assert gateway.reconcile(local_request().as_look_up()) is None

    def test_reconcile_finds_a_charge_behind_more_than_a_hundred_newer_ones(
        self, localstripe_url: str
    ) -> None:
        """localstripe has no search API, so this takes the list path, page after page."""
        gateway = make_stripe(localstripe_url)
        lost = local_request(postal_code=None)
        charged = gateway.charge(lost)
        for _ in range(110):
            gateway.charge(local_request(postal_code=None))

        assert gateway.reconcile(lost.as_look_up()) == charged

    def test_a_captured_charge_is_refunded_once_per_idempotency_key(
        self, localstripe_url: str
    ) -> None:
        gateway = make_stripe(localstripe_url)
        charged = gateway.charge(local_request(postal_code=None))
        assert charged.transaction_id

        reversal = gateway.refund(charged.transaction_id, 1999, idempotency_key="pd-r-1-refund")

        assert reversal.kind == "refund" and (reversal.reversal_id or "").startswith("re_")
        assert reversal.amount_cents == 1999


def test_the_sdk_sends_amount_currency_moto_and_our_idempotency_key(
    httpserver: HTTPServer,
) -> None:
    seen_pm, pm_handler = recorder(lambda _: stripe_json(PAYMENT_METHOD))
    httpserver.expect_request("/v1/payment_methods").respond_with_handler(pm_handler)
    seen, handler = recorder(lambda _: stripe_json(SUCCEEDED))
    httpserver.expect_request("/v1/payment_intents").respond_with_handler(handler)

    result = make_stripe(httpserver.url_for("")).charge(make_request(key="pd-sess1-1"))

    form = parse_qs(seen[0]["body"].decode())
    assert form["amount"] == ["1999"]
    assert form["currency"] == ["usd"]
    assert form["payment_method"] == ["pm_1"]
    assert form["confirm"] == ["true"]
    assert form["payment_method_options[card][moto]"] == ["true"]
    assert form["metadata[paydial_idempotency_key]"] == ["pd-sess1-1"]
    assert seen[0]["headers"]["Idempotency-Key"] == "pd-sess1-1"
    card_form = parse_qs(seen_pm[0]["body"].decode())
    assert card_form["card[number]"] == ["4242424242424242"]
    assert card_form["card[cvc]"] == ["987"]
    assert card_form["billing_details[address][postal_code]"] == ["94107"]
    assert result.processor["receipt_url"] == "https://r.example/1"
    assert result.processor["stripe_charge_id"] == "ch_1"


def test_payments_with_one_credential_set_share_a_client_and_its_connection() -> None:
    """Each payment builds its adapter afresh; the second reuses the first one's connection."""

    def answer(path: str) -> tuple[int, Any]:
        return 200, PAYMENT_METHOD if path.endswith("/payment_methods") else SUCCEEDED

    with keep_alive_server(answer) as server:
        first = make_stripe(server.url).charge(make_request(key="pd-share-1"))
        second = make_stripe(server.url).charge(make_request(key="pd-share-2"))

    assert [first.outcome, second.outcome] == ["captured", "captured"]
    assert len(server.ports) == 4
    assert len(set(server.ports)) == 1, f"one connection, not one per payment: {server.ports}"


@pytest.mark.parametrize(
    ("code", "decline_code", "reason"),
    [
        ("card_declined", "generic_decline", "card_declined"),
        ("card_declined", "insufficient_funds", "insufficient_funds"),
        ("incorrect_cvc", None, "incorrect_cvc"),
        ("expired_card", None, "expired_card"),
        ("incorrect_zip", None, "incorrect_zip"),
        ("incorrect_number", None, "invalid_number"),
        ("processing_error", None, "processing_error"),
    ],
)
def test_card_errors_map_to_normalized_decline_reasons(
    httpserver: HTTPServer, code: str, decline_code: str | None, reason: str
) -> None:
    serve_intent(httpserver, lambda _: card_error(code, decline_code))

    with pytest.raises(CardDeclined) as caught:
        make_stripe(httpserver.url_for("")).charge(make_request())

    assert caught.value.reason == reason
    assert caught.value.retryable is False


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (401, GatewayConfigurationError),
        (500, GatewayOutcomeUnknown),
        (503, GatewayUnavailable),
    ],
)
def test_http_failures_of_the_payment_intent_map_to_the_error_tree(
    httpserver: HTTPServer, status: int, error: type[Exception]
) -> None:
    body = {"error": {"type": "api_error", "message": "boom"}}
    serve_intent(httpserver, lambda _: stripe_json(body, status=status))

    with pytest.raises(error):
        make_stripe(httpserver.url_for("")).charge(make_request())


def test_a_failure_before_the_payment_intent_is_retryable_because_nothing_moved(
    httpserver: HTTPServer,
) -> None:
    httpserver.expect_request("/v1/payment_methods").respond_with_json(
        {"error": {"type": "api_error", "message": "boom"}}, status=500
    )

    with pytest.raises(GatewayUnavailable) as caught:
        make_stripe(httpserver.url_for("")).charge(make_request())
    assert caught.value.retryable is True


def test_a_malformed_answer_to_the_payment_intent_is_an_unknown_outcome(
    httpserver: HTTPServer,
) -> None:
    serve_intent(httpserver, lambda _: Response("<html>oops", status=200))

    with pytest.raises(GatewayOutcomeUnknown):
        make_stripe(httpserver.url_for("")).charge(make_request())


def test_a_refused_connection_is_unavailable(refused_url: str) -> None:
    with pytest.raises(GatewayUnavailable):
        make_stripe(refused_url).charge(make_request())


def test_a_payment_intent_that_times_out_is_an_unknown_outcome(httpserver: HTTPServer) -> None:
    serve_intent(httpserver, stall(stripe_json(SUCCEEDED)))

    with pytest.raises(GatewayOutcomeUnknown):
        make_stripe(httpserver.url_for(""), timeout=CLIENT_TIMEOUT).charge(make_request())


def test_reconcile_searches_by_the_key_in_the_metadata(httpserver: HTTPServer) -> None:
    seen, handler = recorder(
        lambda _: stripe_json(
            {
                "object": "search_result",
                "data": [{**SUCCEEDED, "metadata": {"paydial_idempotency_key": "pd-lost-9"}}],
                "has_more": False,
            }
        )
    )
    httpserver.expect_request("/v1/payment_intents/search").respond_with_handler(handler)

    result = make_stripe(httpserver.url_for("")).reconcile(make_look_up("pd-lost-9"))

    assert result is not None and result.transaction_id == "pi_1"
    assert seen[0]["path"] == "/v1/payment_intents/search"


def test_a_succeeded_intent_cannot_be_cancelled_so_it_is_not_voidable(
    httpserver: HTTPServer,
) -> None:
    error = {"type": "invalid_request_error", "code": "payment_intent_unexpected_state"}
    seen, handler = recorder(lambda _: stripe_json({"error": error}, status=400))
    httpserver.expect_request("/v1/payment_intents/pi_1/cancel").respond_with_handler(handler)

    with pytest.raises(NotVoidable):
        make_stripe(httpserver.url_for("")).void("pi_1", idempotency_key="pd-s-1-void")
    assert seen[0]["headers"]["Idempotency-Key"] == "pd-s-1-void"
