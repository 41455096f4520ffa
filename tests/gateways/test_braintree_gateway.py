"""Braintree: the official SDK against a local server speaking its XML gateway API."""

from __future__ import annotations

from typing import Any

import pytest
from lxml import etree
from pytest_httpserver import HTTPServer
from werkzeug import Response

from gateways import build_gateway
from gateways.base import (
    CardDeclined,
    GatewayConfigurationError,
    GatewayOutcomeUnknown,
    GatewayUnavailable,
    NotVoidable,
    short_reference,
)
from gateways.braintree import BraintreeGateway
from tests.gateways.gateway_helpers import (
    CLIENT_TIMEOUT,
    make_look_up,
    make_request,
    recorder,
    stall,
)

MERCHANT = "/merchants/mid"


def bt(xml: str, status: int = 201) -> Response:
    body = '<?xml version="1.0" encoding="UTF-8"?>\n' + xml
    return Response(body, status=status, content_type="application/xml; charset=utf-8")


SETTLING = (
    "<transaction><id>bt7x2k9q</id><status>submitted_for_settlement</status><type>sale</type>"
    "<amount>19.99</amount><processor-response-code>1000</processor-response-code>"
    "<processor-response-text>Approved</processor-response-text>"
    "<credit-card><last-4>4242</last-4><card-type>Visa</card-type></credit-card></transaction>"
)


def declined(code: str, text: str, status: str = "processor_declined", extra: str = "") -> str:
    return (
        f'<api-error-response><errors><errors type="array"/></errors><message>{text}</message>'
        f"<transaction><id>btdecl1</id><status>{status}</status><type>sale</type>"
        f"<amount>19.99</amount><processor-response-code>{code}</processor-response-code>"
        f"<processor-response-text>{text}</processor-response-text>{extra}"
        "</transaction></api-error-response>"
    )


def make_braintree(url: str, timeout: float = 5.0) -> BraintreeGateway:
    gateway = build_gateway(
        "braintree",
        {"merchant_id": "mid", "public_key": "pub", "private_key": "priv", "api_base": url},
        environment="test",
        timeout=timeout,
    )
    assert isinstance(gateway, BraintreeGateway)
    return gateway


def serve(httpserver: HTTPServer, path: str, answer: Any) -> list[dict[str, Any]]:
    fixed = isinstance(answer, Response)  # a Response is itself callable (WSGI), so ask first
    seen, handler = recorder((lambda _: answer) if fixed else answer)
    httpserver.expect_request(MERCHANT + path).respond_with_handler(handler)
    return seen


def test_a_sale_is_submitted_for_settlement_with_our_order_id(httpserver: HTTPServer) -> None:
    seen = serve(httpserver, "/transactions", bt(SETTLING))

    result = make_braintree(httpserver.url_for("")).charge(make_request(key="pd-sess1-1"))

    sent = etree.fromstring(seen[0]["body"])
    assert sent.findtext("amount") == "19.99"
    assert sent.findtext("type") == "sale"
    assert sent.findtext("order_id") == "pd-sess1-1"
    assert sent.findtext("transaction_source") == "moto"
    assert sent.findtext("credit_card/number") == "4242424242424242"
    assert sent.findtext("credit_card/cvv") == "987"
    assert sent.findtext("credit_card/expiration_month") == "12"
    assert sent.findtext("billing/postal_code") == "94107"
    assert sent.findtext("options/submit_for_settlement") == "true"
    assert seen[0]["headers"]["Authorization"].startswith("Basic ")
    assert result.outcome == "captured"
    assert result.processor == {
        "braintree_transaction_id": "bt7x2k9q",
        "braintree_customer_id": None,
        "braintree_payment_method_token": None,
    }


@pytest.mark.parametrize(
    ("code", "text", "reason"),
    [
        ("2000", "Do Not Honor", "card_declined"),
        ("2001", "Insufficient Funds", "insufficient_funds"),
        ("2004", "Expired Card", "expired_card"),
        ("2005", "Invalid Credit Card Number", "invalid_number"),
        ("2010", "Card Issuer Declined CVV", "incorrect_cvc"),
        ("2060", "Address Verification Failed", "incorrect_zip"),
        ("3000", "Processor Network Unavailable", "processing_error"),
    ],
)
def test_processor_declines_map_to_normalized_reasons(
    httpserver: HTTPServer, code: str, text: str, reason: str
) -> None:
    serve(httpserver, "/transactions", bt(declined(code, text), status=422))

    with pytest.raises(CardDeclined) as caught:
        make_braintree(httpserver.url_for("")).charge(make_request())

    assert caught.value.reason == reason
    assert caught.value.processor_code == code


def test_a_gateway_rejected_duplicate_is_an_unknown_outcome(httpserver: HTTPServer) -> None:
    answer = declined(
        "",
        "Gateway Rejected: duplicate",
        "gateway_rejected",
        "<gateway-rejection-reason>duplicate</gateway-rejection-reason>",
    )
    serve(httpserver, "/transactions", bt(answer, status=422))

    with pytest.raises(GatewayOutcomeUnknown):
        make_braintree(httpserver.url_for("")).charge(make_request())


def test_a_validation_error_on_the_number_is_an_invalid_number_decline(
    httpserver: HTTPServer,
) -> None:
    answer = (
        '<api-error-response><errors><errors type="array"/><transaction>'
        '<errors type="array"/><credit-card><errors type="array"><error><code>81715</code>'
        '<attribute type="symbol">number</attribute>'
        "<message>Credit card number is invalid.</message></error></errors></credit-card>"
        "</transaction></errors><message>Credit card number is invalid.</message>"
        "</api-error-response>"
    )
    serve(httpserver, "/transactions", bt(answer, status=422))

    with pytest.raises(CardDeclined) as caught:
        make_braintree(httpserver.url_for("")).charge(make_request())
    assert caught.value.reason == "invalid_number"


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (Response("", status=401), GatewayConfigurationError),
        (Response("", status=500), GatewayOutcomeUnknown),
        (Response("", status=503), GatewayUnavailable),
        (Response("<transaction><id>x", status=201), GatewayOutcomeUnknown),
    ],
)
def test_http_failures_and_malformed_bodies_map_to_the_error_tree(
    httpserver: HTTPServer, answer: Response, error: type[Exception]
) -> None:
    serve(httpserver, "/transactions", answer)

    with pytest.raises(error):
        make_braintree(httpserver.url_for("")).charge(make_request())


def test_a_refused_connection_is_unavailable(refused_url: str) -> None:
    with pytest.raises(GatewayUnavailable):
        make_braintree(refused_url).charge(make_request())


def test_a_stalled_sale_times_out_as_an_unknown_outcome(httpserver: HTTPServer) -> None:
    serve(httpserver, "/transactions", stall(bt(SETTLING)))

    with pytest.raises(GatewayOutcomeUnknown):
        make_braintree(httpserver.url_for(""), timeout=CLIENT_TIMEOUT).charge(make_request())


def test_tokenize_vaults_a_verified_card_under_a_customer_id_from_the_key(
    httpserver: HTTPServer,
) -> None:
    customer_id = short_reference("pd-tok-1", 36)
    seen = serve(
        httpserver,
        "/customers",
        bt(
            f'<customer><id>{customer_id}</id><credit-cards type="array"><credit-card>'
            "<token>tok9</token><last-4>4242</last-4></credit-card></credit-cards></customer>"
        ),
    )

    result = make_braintree(httpserver.url_for("")).tokenize(make_request(key="pd-tok-1"))

    sent = etree.fromstring(seen[0]["body"])
    assert sent.findtext("id") == customer_id
    assert sent.findtext("credit_card/options/verify_card") == "true"
    assert sent.findtext("credit_card/number") == "4242424242424242"
    assert result.outcome == "tokenized"
    assert result.processor["braintree_customer_id"] == customer_id
    assert result.processor["braintree_payment_method_token"] == "tok9"


def test_tokenize_reports_a_failed_verification_as_a_decline(httpserver: HTTPServer) -> None:
    answer = (
        '<api-error-response><errors><errors type="array"/></errors>'
        "<verification><id>v1</id><status>processor_declined</status>"
        "<processor-response-code>2010</processor-response-code>"
        "<processor-response-text>Card Issuer Declined CVV</processor-response-text>"
        "</verification><message>Card Issuer Declined CVV</message></api-error-response>"
    )
    serve(httpserver, "/customers", bt(answer, status=422))

    with pytest.raises(CardDeclined) as caught:
        make_braintree(httpserver.url_for("")).tokenize(make_request())
    assert caught.value.reason == "incorrect_cvc"


def test_reconcile_finds_the_sale_by_order_id(httpserver: HTTPServer) -> None:
    searched = serve(
        httpserver,
        "/transactions/advanced_search_ids",
        bt(
            '<search-results><page-size type="integer">50</page-size>'
            '<ids type="array"><item>bt7x2k9q</item></ids></search-results>',
            status=200,
        ),
    )
    serve(
        httpserver,
        "/transactions/advanced_search",
        bt(
            f'<credit-card-transactions type="collection">{SETTLING}</credit-card-transactions>',
            200,
        ),
    )

    result = make_braintree(httpserver.url_for("")).reconcile(make_look_up("pd-lost-1"))

    assert etree.fromstring(searched[0]["body"]).findtext("order_id/is") == "pd-lost-1"
    assert result is not None
    assert result.processor["braintree_transaction_id"] == "bt7x2k9q"


def test_reconcile_answers_none_when_no_sale_or_customer_exists(httpserver: HTTPServer) -> None:
    serve(
        httpserver,
        "/transactions/advanced_search_ids",
        bt(
            '<search-results><page-size type="integer">50</page-size><ids type="array"/>'
            "</search-results>",
            200,
        ),
    )
    serve(httpserver, "/customers/" + short_reference("pd-lost-2", 36), Response("", status=404))

    assert make_braintree(httpserver.url_for("")).reconcile(make_look_up("pd-lost-2")) is None


VOIDED = SETTLING.replace("submitted_for_settlement", "voided")
CANNOT_VOID = (
    '<api-error-response><errors><errors type="array"/><transaction><errors type="array">'
    '<error><code>91504</code><attribute type="symbol">base</attribute>'
    "<message>Transaction can only be voided if status is authorized, submitted_for_settlement,"
    " or settlement_pending.</message></error></errors></transaction></errors>"
    "<message>Transaction can only be voided if status is authorized.</message>"
    "</api-error-response>"
)


def test_void_puts_the_transaction_void_with_our_request_key(httpserver: HTTPServer) -> None:
    seen = serve(httpserver, "/transactions/bt7x2k9q/void", bt(VOIDED, status=200))

    reversal = make_braintree(httpserver.url_for("")).void(
        "bt7x2k9q", idempotency_key="pd-s-1-void"
    )

    assert etree.fromstring(seen[0]["body"]).findtext("api_request_key") == "pd-s-1-void"
    assert (reversal.kind, reversal.reference) == ("void", "bt7x2k9q")


def test_a_settled_transaction_cannot_be_voided(httpserver: HTTPServer) -> None:
    serve(httpserver, "/transactions/bt7x2k9q/void", bt(CANNOT_VOID, status=422))

    with pytest.raises(NotVoidable):
        make_braintree(httpserver.url_for("")).void("bt7x2k9q", idempotency_key="pd-s-1-void")


@pytest.mark.parametrize(("cents", "amount"), [(1999, "19.99"), (700, "7.00")])  # full, part
def test_refund_posts_the_amount_and_our_request_key(
    httpserver: HTTPServer, cents: int, amount: str
) -> None:
    credit = (
        SETTLING.replace("bt7x2k9q", "btref01")
        .replace("<type>sale", "<type>credit")
        .replace("19.99", amount)
    )
    seen = serve(httpserver, "/transactions/bt7x2k9q/refund", bt(credit))

    reversal = make_braintree(httpserver.url_for("")).refund(
        "bt7x2k9q", cents, idempotency_key="pd-s-1-refund"
    )

    sent = etree.fromstring(seen[0]["body"])
    assert (sent.findtext("amount"), sent.findtext("api_request_key")) == (amount, "pd-s-1-refund")
    assert (reversal.kind, reversal.reversal_id, reversal.amount_cents) == (
        "refund",
        "btref01",
        cents,
    )
