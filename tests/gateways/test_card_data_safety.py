"""Card number, expiry and security code never show in repr, str or any gateway error."""

from __future__ import annotations

import json
import logging

import pytest
from pytest_httpserver import HTTPServer

from gateways import build_gateway
from gateways.base import GatewayError, PaymentRequest
from tests.gateways.gateway_helpers import make_request

PAN = "4000056655665556"
CVC = "737"


def secret_free(text: str) -> bool:
    return PAN not in text and CVC not in text and "2031" not in text


def test_requests_and_cards_hide_the_number_expiry_and_code() -> None:
    request: PaymentRequest = make_request(PAN, cvc=CVC)

    for text in (repr(request), str(request), repr(request.card), str(request.card), f"{request}"):
        assert secret_free(text), text
    assert "last4='5556'" in repr(request.card)


@pytest.mark.parametrize("gateway", ["stripe", "shift4"])
def test_gateway_error_messages_never_echo_the_card_number(
    httpserver: HTTPServer, gateway: str
) -> None:
    # A misbehaving gateway that quotes the number back in its error text.
    echo = {"error": {"type": "invalid_request_error", "message": f"bad card {PAN} cvc"}}
    httpserver.expect_request("/v1/payment_methods").respond_with_json(echo, status=400)
    httpserver.expect_request("/charges").respond_with_json(echo, status=400)
    credentials = {"secret_key": "sk_test_x", "api_base": httpserver.url_for("")}

    with pytest.raises(GatewayError) as caught:
        build_gateway(gateway, credentials, environment="test").charge(make_request(PAN, cvc=CVC))

    error = caught.value
    assert secret_free(str(error)) and secret_free(repr(error)), str(error)
    assert "[redacted]" in error.message
    assert json.dumps(vars(error), default=str).find(PAN) == -1


def test_sdk_debug_logs_never_carry_the_card_even_when_the_app_logs_at_debug(
    caplog: pytest.LogCaptureFixture, localstripe_url: str, httpserver: HTTPServer
) -> None:
    caplog.set_level(logging.DEBUG)
    httpserver.expect_request("/xml/v1/request.api").respond_with_data("", status=503)
    stripe = build_gateway(
        "stripe", {"secret_key": "sk_test_x", "api_base": localstripe_url}, environment="test"
    )
    anet = build_gateway(
        "authorizenet",
        {
            "api_login_id": "l",
            "transaction_key": "k",
            "api_base": httpserver.url_for("/xml/v1/request.api"),
        },
        environment="test",
    )

    stripe.charge(make_request(PAN, cvc=CVC, description=None))
    with pytest.raises(GatewayError):
        anet.charge(make_request(PAN, cvc=CVC))

    assert caplog.records, "the SDKs should still log at INFO and above"
    assert PAN not in caplog.text
