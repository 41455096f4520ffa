"""The simulator and the registry: PRODUCT.md's test cards, determinism, and who gets built."""

from __future__ import annotations

import pytest

from gateways import build_gateway, required_credentials
from gateways.authorizenet import AuthorizeNetGateway
from gateways.base import CardDeclined, GatewayConfigurationError, NotVoidable
from gateways.simulator import SimulatorGateway
from tests.gateways.gateway_helpers import make_look_up, make_request


@pytest.mark.parametrize(
    ("number", "reason"),
    [
        ("4000000000000002", "card_declined"),
        ("4000000000009995", "insufficient_funds"),
        ("4000000000000127", "incorrect_cvc"),
        ("4000000000000069", "expired_card"),
        ("4000000000000119", "processing_error"),
        ("4242424242424241", "invalid_number"),
    ],
)
def test_test_cards_decline_with_their_documented_reason(number: str, reason: str) -> None:
    with pytest.raises(CardDeclined) as caught:
        SimulatorGateway("stripe").charge(make_request(number))
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    ("number", "brand"),
    [("4242424242424242", "visa"), ("378282246310005", "amex"), ("5555555555554444", "mastercard")],
)
def test_approving_cards_are_captured(number: str, brand: str) -> None:
    result = SimulatorGateway("braintree").charge(make_request(number, cvc="1234"))
    assert (result.outcome, result.card_brand) == ("captured", brand)


def test_the_same_key_always_gets_the_same_answer_and_reconcile_repeats_it() -> None:
    gateway = SimulatorGateway("authorizenet")
    first = gateway.charge(make_request(key="pd-sim-1"))

    assert SimulatorGateway("authorizenet").charge(make_request(key="pd-sim-1")) == first
    assert gateway.reconcile(make_look_up("pd-sim-1")) == first
    assert gateway.charge(make_request(key="pd-sim-2")).transaction_id != first.transaction_id
    assert gateway.reconcile(make_look_up("pd-sim-never")) is None


@pytest.mark.parametrize("name", ["stripe", "authorizenet", "braintree", "shift4"])
def test_an_authorization_is_captured_once_per_key_or_voided(name: str) -> None:
    simulator = SimulatorGateway(name)
    held = simulator.authorize(make_request())
    assert held.outcome == "authorized" and held.transaction_id
    captured = simulator.capture(held.transaction_id, 1500, idempotency_key="pd-c-1-capture-1")

    assert simulator.capture(held.transaction_id, 1500, idempotency_key="pd-c-1-capture-1") == (
        captured
    )
    assert (
        simulator.find_reversal("capture", held.transaction_id, idempotency_key="pd-c-1-capture-1")
        == captured
    )
    with pytest.raises(GatewayConfigurationError):  # captured: no second capture under a new key
        simulator.capture(held.transaction_id, 1500, idempotency_key="pd-c-1-capture-2")
    other = simulator.authorize(make_request())
    assert other.transaction_id
    assert simulator.void(other.transaction_id, idempotency_key="pd-c-2-void-1").kind == "void"


def test_test_mode_without_credentials_gets_the_simulator_and_live_mode_refuses() -> None:
    assert isinstance(build_gateway("shift4", None, environment="test"), SimulatorGateway)
    with pytest.raises(GatewayConfigurationError):
        build_gateway("shift4", None, environment="live")


def test_missing_credentials_are_named_without_their_values() -> None:
    with pytest.raises(GatewayConfigurationError) as caught:
        build_gateway("authorizenet", {"api_login_id": "x"}, environment="live")
    assert "transaction_key" in caught.value.message
    assert required_credentials("braintree") == ("merchant_id", "public_key", "private_key")


def test_live_authorizenet_defaults_to_production_and_test_to_sandbox() -> None:
    credentials = {"api_login_id": "l", "transaction_key": "k"}
    live = build_gateway("authorizenet", credentials, environment="live")
    test = build_gateway("authorizenet", credentials, environment="test")
    assert isinstance(live, AuthorizeNetGateway) and isinstance(test, AuthorizeNetGateway)
    assert live.endpoint == "https://api2.authorize.net/xml/v1/request.api"
    assert test.endpoint == "https://apitest.authorize.net/xml/v1/request.api"


@pytest.mark.parametrize("name", ["stripe", "authorizenet", "braintree", "shift4"])
def test_the_simulator_voids_like_its_gateway_and_refunds_once_per_key(name: str) -> None:
    simulator = SimulatorGateway(name)
    paid = simulator.charge(make_request())
    assert paid.transaction_id

    if name in ("stripe", "shift4"):  # captured at once: only a refund gives it back
        with pytest.raises(NotVoidable):
            simulator.void(paid.transaction_id, idempotency_key="pd-v-1-void")
    else:
        assert simulator.void(paid.transaction_id, idempotency_key="pd-v-1-void").kind == "void"
    first = simulator.refund(paid.transaction_id, 1999, idempotency_key="pd-v-1-refund")
    again = simulator.refund(paid.transaction_id, 1999, idempotency_key="pd-v-1-refund")
    assert first == again and first.kind == "refund" and first.amount_cents == 1999


def test_avs_is_unavailable_without_a_billing_address_or_zip_like_the_gateways() -> None:
    gateway = SimulatorGateway("authorizenet")
    card = "4242424242424242"
    bare = gateway.charge(make_request(card, billing=False, postal_code=None))
    keyed = gateway.charge(make_request(card, billing=False, postal_code="94105"))
    full = gateway.charge(make_request(card, billing=True, postal_code=None))

    assert bare.processor["authnet_avs_result_code"] == "U"
    assert keyed.processor["authnet_avs_result_code"] == "Z"
    assert full.processor["authnet_avs_result_code"] == "Y"
