"""After the payment, through each official SDK: capture, refund (full and partial), void, the
gateways' refusals, and a refund whose answer times out being found by look-up, sent once.

Stripe runs against localstripe; the others against local servers speaking their wire formats.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs

import pytest
from lxml import etree
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from gateways.base import (
    GatewayConfigurationError,
    GatewayError,
    GatewayOutcomeUnknown,
    NotRefundable,
    short_reference,
)
from tests.gateways.gateway_helpers import CLIENT_TIMEOUT, make_request, recorder, stall
from tests.gateways.test_authorizenet_gateway import NS, anet, first, make_anet, messages, xml_of
from tests.gateways.test_authorizenet_gateway import serve as serve_anet
from tests.gateways.test_braintree_gateway import SETTLING, bt, make_braintree
from tests.gateways.test_braintree_gateway import serve as serve_bt
from tests.gateways.test_shift4_gateway import CHARGE, make_shift4, s4
from tests.gateways.test_shift4_gateway import serve as serve_s4
from tests.gateways.test_stripe_gateway import local_request, make_stripe, stripe_json


def answers_check(check: Callable[[], None], status: str, refundable: bool) -> None:
    """A refundable payment passes the check; another says void instead, naming its status."""
    if refundable:
        check()
        return
    with pytest.raises(NotRefundable) as caught:
        check()
    assert (caught.value.code, caught.value.processor_code) == ("void_required", status)


# --- Stripe (localstripe) ------------------------------------------------------------------------


class TestStripeAgainstLocalstripe:
    def test_an_authorization_is_captured_in_part_and_then_refunded_in_part(
        self, localstripe_url: str
    ) -> None:
        gateway = make_stripe(localstripe_url)
        held = gateway.authorize(local_request(postal_code=None))
        assert held.outcome == "authorized" and held.transaction_id

        captured = gateway.capture(held.transaction_id, 1500, idempotency_key="pd-s-capture-1")
        refunded = gateway.refund(held.transaction_id, 500, idempotency_key="pd-s-refund-1")

        assert (captured.kind, captured.amount_cents) == ("capture", 1500)
        assert (refunded.kind, refunded.amount_cents) == ("refund", 500)
        assert (refunded.reversal_id or "").startswith("re_")
        found = gateway.find_reversal(
            "refund", held.transaction_id, idempotency_key="pd-s-refund-1"
        )
        assert found == refunded
        assert (
            gateway.find_reversal("refund", held.transaction_id, idempotency_key="pd-s-refund-2")
            is None
        )
        assert (
            gateway.find_reversal("capture", held.transaction_id, idempotency_key="pd-s-capture-1")
            is not None
        )

    def test_a_charge_is_refunded_in_full_and_found_by_its_key(self, localstripe_url: str) -> None:
        gateway = make_stripe(localstripe_url)
        paid = gateway.charge(local_request(postal_code=None))
        assert paid.transaction_id

        refunded = gateway.refund(paid.transaction_id, 1999, idempotency_key="pd-f-refund-1")

        assert refunded.amount_cents == 1999
        assert (
            gateway.find_reversal("refund", paid.transaction_id, idempotency_key="pd-f-refund-1")
            == refunded
        )

    def test_an_authorization_is_voided(self, localstripe_url: str) -> None:
        gateway = make_stripe(localstripe_url)
        held = gateway.authorize(local_request(postal_code=None))
        assert held.transaction_id

        assert gateway.find_reversal("void", held.transaction_id, idempotency_key="v") is None
        assert gateway.void(held.transaction_id, idempotency_key="pd-v-void-1").kind == "void"
        assert gateway.find_reversal("void", held.transaction_id, idempotency_key="v") is not None


def test_stripe_a_refund_that_times_out_is_found_by_its_key_and_not_sent_again(
    httpserver: HTTPServer,
) -> None:
    refund = {
        "id": "re_9",
        "object": "refund",
        "amount": 700,
        "status": "succeeded",
        "metadata": {"paydial_idempotency_key": "pd-t-refund-1"},
    }
    posted, handler = recorder(stall(stripe_json(refund)))
    httpserver.expect_request("/v1/refunds", method="POST").respond_with_handler(handler)
    listing = {"object": "list", "data": [refund], "has_more": False, "url": "/v1/refunds"}
    listed, lister = recorder(lambda _: stripe_json(listing))
    httpserver.expect_request("/v1/refunds", method="GET").respond_with_handler(lister)
    with pytest.raises(GatewayOutcomeUnknown):
        make_stripe(httpserver.url_for(""), timeout=CLIENT_TIMEOUT).refund(
            "pi_1", 700, idempotency_key="pd-t-refund-1"
        )
    found = make_stripe(httpserver.url_for("")).find_reversal(
        "refund", "pi_1", idempotency_key="pd-t-refund-1"
    )

    assert found is not None and (found.reversal_id, found.amount_cents) == ("re_9", 700)
    sent = parse_qs(posted[0]["body"].decode())
    assert sent["metadata[paydial_idempotency_key]"] == ["pd-t-refund-1"]
    assert len(posted) == 1
    assert listed[0]["path"] == "/v1/refunds"


# --- Authorize.net -------------------------------------------------------------------------------


@pytest.fixture
def anet_url(httpserver: HTTPServer) -> str:
    return httpserver.url_for("").rstrip("/")


def details(status: str, *, amount: str = "19.99", trans_id: str = "60012345678") -> str:
    return (
        f"<getTransactionDetailsResponse {NS}>{messages()}<transaction>"
        f"<transId>{trans_id}</transId><transactionStatus>{status}</transactionStatus>"
        f"<authAmount>{amount}</authAmount><settleAmount>{amount}</settleAmount>"
        "<payment><creditCard><cardNumber>XXXX4242</cardNumber>"
        "<expirationDate>XXXX</expirationDate></creditCard></payment>"
        "</transaction></getTransactionDetailsResponse>"
    )


def accepted(trans_id: str) -> str:
    return (
        f"<createTransactionResponse {NS}>{messages()}<transactionResponse>"
        f"<responseCode>1</responseCode><transId>{trans_id}</transId>"
        "</transactionResponse></createTransactionResponse>"
    )


def anet_server(
    status: str, *, refund_answer: Any = None, unsettled_invoice: str | None = None
) -> Any:
    """Details of the original (in `status`), an unsettled list, and createTransaction."""

    def answer(request: Request) -> Response:
        kind = etree.QName(xml_of(request.get_data())).localname
        if kind == "getTransactionDetailsRequest":
            trans_id = first(xml_of(request.get_data()), "transId") or ""
            refund = trans_id == "60200"
            return anet(details(status, amount="7.00" if refund else "19.99", trans_id=trans_id))
        if kind == "getUnsettledTransactionListRequest":
            rows = (
                f"<transactions><transaction><transId>60200</transId>"
                f"<invoiceNumber>{unsettled_invoice}</invoiceNumber></transaction></transactions>"
                "<totalNumInResultSet>1</totalNumInResultSet>"
            )
            return anet(
                f"<getUnsettledTransactionListResponse {NS}>{messages()}{rows}"
                "</getUnsettledTransactionListResponse>"
            )
        if refund_answer is not None and first(xml_of(request.get_data()), "transactionType") == (
            "refundTransaction"
        ):
            return refund_answer(request)  # type: ignore[no-any-return]
        return anet(accepted("60200"))

    return answer


def test_authorizenet_captures_part_of_an_authorization_by_prior_auth_capture(
    httpserver: HTTPServer, anet_url: str
) -> None:
    seen = serve_anet(httpserver, anet_server("authorizedPendingCapture"))

    captured = make_anet(anet_url).capture("60012345678", 1500, idempotency_key="pd-a-capture-1")

    sent = xml_of(seen[0]["body"])
    assert first(sent, "transactionType") == "priorAuthCaptureTransaction"
    assert first(sent, "refTransId") == "60012345678"
    assert Decimal(first(sent, "amount") or "") == Decimal("15.00")
    assert first(sent, "invoiceNumber") == short_reference("pd-a-capture-1")
    assert (captured.kind, captured.amount_cents) == ("capture", 1500)


def test_authorizenet_refuses_to_refund_an_unsettled_payment_so_it_must_be_voided(
    httpserver: HTTPServer, anet_url: str
) -> None:
    seen = serve_anet(httpserver, anet_server("capturedPendingSettlement"))

    with pytest.raises(NotRefundable) as caught:
        make_anet(anet_url).refund("60012345678", 1999, idempotency_key="pd-a-refund-1")

    assert caught.value.code == "void_required"
    kinds = [etree.QName(xml_of(request["body"])).localname for request in seen]
    assert kinds == ["getTransactionDetailsRequest"]  # no refundTransaction was sent


@pytest.mark.parametrize(
    ("status", "refundable"),
    [
        ("capturedPendingSettlement", False),
        ("authorizedPendingCapture", False),
        ("settledSuccessfully", True),
    ],
)
def test_authorizenet_says_before_a_refund_whether_the_payment_has_settled_by_reading_only(
    httpserver: HTTPServer, anet_url: str, status: str, refundable: bool
) -> None:
    seen = serve_anet(httpserver, anet_server(status))

    answers_check(lambda: make_anet(anet_url).check_refundable("60012345678"), status, refundable)

    [asked] = [xml_of(request["body"]) for request in seen]
    assert etree.QName(asked).localname == "getTransactionDetailsRequest"
    assert first(asked, "transId") == "60012345678"


def test_authorizenet_that_cannot_be_asked_is_unavailable_not_refundable(
    httpserver: HTTPServer, anet_url: str
) -> None:
    serve_anet(httpserver, lambda _: Response("busy", status=503))

    with pytest.raises(GatewayError) as caught:
        make_anet(anet_url).check_refundable("60012345678")

    assert not isinstance(caught.value, NotRefundable)
    assert caught.value.code == "gateway_unavailable"


def test_authorizenet_refunds_part_of_a_settled_payment(
    httpserver: HTTPServer, anet_url: str
) -> None:
    seen = serve_anet(httpserver, anet_server("settledSuccessfully"))

    refunded = make_anet(anet_url).refund("60012345678", 700, idempotency_key="pd-a-refund-1")

    sent = xml_of(seen[1]["body"])
    assert first(sent, "transactionType") == "refundTransaction"
    assert Decimal(first(sent, "amount") or "") == Decimal("7.00")
    assert first(sent, "invoiceNumber") == short_reference("pd-a-refund-1")
    assert (refunded.reversal_id, refunded.amount_cents) == ("60200", 700)


def test_authorizenet_a_refund_that_times_out_is_found_by_its_invoice_number_and_sent_once(
    httpserver: HTTPServer, anet_url: str
) -> None:
    key = "pd-a-refund-9"
    seen = serve_anet(
        httpserver,
        anet_server(
            "settledSuccessfully",
            refund_answer=stall(anet(accepted("60200"))),
            unsettled_invoice=short_reference(key),
        ),
    )
    gateway = make_anet(anet_url, timeout=CLIENT_TIMEOUT)

    with pytest.raises(GatewayOutcomeUnknown):
        gateway.refund("60012345678", 700, idempotency_key=key)
    found = make_anet(anet_url).find_reversal("refund", "60012345678", idempotency_key=key)

    assert found is not None and (found.reversal_id, found.amount_cents) == ("60200", 700)
    refunds = [
        r for r in seen if first(xml_of(r["body"]), "transactionType") == "refundTransaction"
    ]
    assert len(refunds) == 1


def test_authorizenet_finds_a_void_and_a_capture_by_the_status_they_left(
    httpserver: HTTPServer, anet_url: str
) -> None:
    serve_anet(httpserver, anet_server("voided"))
    gateway = make_anet(anet_url)

    assert gateway.find_reversal("void", "60012345678", idempotency_key="k") is not None
    assert gateway.find_reversal("capture", "60012345678", idempotency_key="k") is None


# --- Braintree -----------------------------------------------------------------------------------

AUTHORIZED = SETTLING.replace("submitted_for_settlement", "authorized")
CANNOT_REFUND = (
    '<api-error-response><errors><errors type="array"/><transaction><errors type="array">'
    '<error><code>91506</code><attribute type="symbol">base</attribute>'
    "<message>Cannot refund a transaction unless it is settled.</message></error></errors>"
    "</transaction></errors><message>Cannot refund a transaction unless it is settled.</message>"
    "</api-error-response>"
)


def test_braintree_authorizes_without_settling_then_submits_part_for_settlement(
    httpserver: HTTPServer,
) -> None:
    sold = serve_bt(httpserver, "/transactions", bt(AUTHORIZED))
    settled = serve_bt(
        httpserver,
        "/transactions/bt7x2k9q/submit_for_settlement",
        bt(SETTLING.replace("19.99", "15.00"), status=200),
    )
    gateway = make_braintree(httpserver.url_for(""))

    held = gateway.authorize(make_request())
    captured = gateway.capture("bt7x2k9q", 1500, idempotency_key="pd-b-capture-1")

    assert etree.fromstring(sold[0]["body"]).findtext("options/submit_for_settlement") == "false"
    assert held.outcome == "authorized"
    assert etree.fromstring(settled[0]["body"]).findtext("amount") == "15.00"
    assert (captured.kind, captured.amount_cents) == ("capture", 1500)


def test_braintree_refuses_to_refund_an_unsettled_sale_so_it_must_be_voided(
    httpserver: HTTPServer,
) -> None:
    serve_bt(httpserver, "/transactions/bt7x2k9q/refund", bt(CANNOT_REFUND, status=422))

    with pytest.raises(NotRefundable):
        make_braintree(httpserver.url_for("")).refund(
            "bt7x2k9q", 1999, idempotency_key="pd-b-refund-1"
        )


@pytest.mark.parametrize(
    ("status", "refundable"),
    [
        ("authorized", False),
        ("submitted_for_settlement", False),
        ("settling", True),
        ("settled", True),
    ],
)
def test_braintree_says_before_a_refund_whether_the_sale_has_settled_by_reading_only(
    httpserver: HTTPServer, status: str, refundable: bool
) -> None:
    sale = SETTLING.replace("submitted_for_settlement", status)
    found = serve_bt(httpserver, "/transactions/bt7x2k9q", bt(sale, status=200))
    gateway = make_braintree(httpserver.url_for(""))

    answers_check(lambda: gateway.check_refundable("bt7x2k9q"), status, refundable)

    assert [request["path"] for request in found] == ["/merchants/mid/transactions/bt7x2k9q"]
    assert all(request["body"] == b"" for request in found)  # a GET: nothing moves


def test_braintree_a_refund_that_times_out_is_found_by_its_order_id_and_sent_once(
    httpserver: HTTPServer,
) -> None:
    credit = (
        SETTLING.replace("bt7x2k9q", "btref09")
        .replace("<type>sale", "<type>credit")
        .replace("19.99", "7.00")
    )
    posted = serve_bt(httpserver, "/transactions/bt7x2k9q/refund", stall(bt(credit)))
    searched = serve_bt(
        httpserver,
        "/transactions/advanced_search_ids",
        bt(
            '<search-results><page-size type="integer">50</page-size>'
            '<ids type="array"><item>btref09</item></ids></search-results>',
            status=200,
        ),
    )
    serve_bt(
        httpserver,
        "/transactions/advanced_search",
        bt(f'<credit-card-transactions type="collection">{credit}</credit-card-transactions>', 200),
    )

    with pytest.raises(GatewayOutcomeUnknown):
        make_braintree(httpserver.url_for(""), timeout=CLIENT_TIMEOUT).refund(
            "bt7x2k9q", 700, idempotency_key="pd-b-refund-9"
        )
    found = make_braintree(httpserver.url_for("")).find_reversal(
        "refund", "bt7x2k9q", idempotency_key="pd-b-refund-9"
    )

    assert etree.fromstring(posted[0]["body"]).findtext("order_id") == "pd-b-refund-9"
    assert etree.fromstring(searched[0]["body"]).findtext("order_id/is") == "pd-b-refund-9"
    assert found is not None and (found.reversal_id, found.amount_cents) == ("btref09", 700)
    assert len(posted) == 1


# --- Shift4 --------------------------------------------------------------------------------------


def test_shift4_authorizes_uncaptured_then_captures_the_charge(httpserver: HTTPServer) -> None:
    held_charge = {**CHARGE, "captured": False}
    created = serve_s4(httpserver, "/charges", s4(held_charge))
    captured_seen = serve_s4(httpserver, "/charges/char_9kQx/capture", s4(CHARGE))
    gateway = make_shift4(httpserver.url_for(""))

    held = gateway.authorize(make_request())
    captured = gateway.capture("char_9kQx", 1999, idempotency_key="pd-4-capture-1")

    assert json.loads(created[0]["body"])["captured"] is False and held.outcome == "authorized"
    assert captured_seen[0]["headers"]["Idempotency-Key"] == "pd-4-capture-1"
    assert (captured.kind, captured.amount_cents) == ("capture", 1999)


def test_shift4_a_refund_that_times_out_is_found_in_the_charges_refunds_and_sent_once(
    httpserver: HTTPServer,
) -> None:
    ours = {"id": "ref_9", "amount": 700, "metadata": {"paydial_idempotency_key": "pd-4-ref-9"}}
    other = {"id": "ref_8", "amount": 300, "metadata": {}}
    refunded = {**CHARGE, "refunds": [other, ours]}
    posted = serve_s4(httpserver, "/charges/char_9kQx/refund", stall(s4(refunded)))
    gateway = make_shift4(httpserver.url_for(""), timeout=CLIENT_TIMEOUT)

    with pytest.raises(GatewayOutcomeUnknown):
        gateway.refund("char_9kQx", 700, idempotency_key="pd-4-ref-9")
    serve_s4(httpserver, "/charges/char_9kQx", s4(refunded))
    found = make_shift4(httpserver.url_for("")).find_reversal(
        "refund", "char_9kQx", idempotency_key="pd-4-ref-9"
    )

    assert found is not None and (found.reversal_id, found.amount_cents) == ("ref_9", 700)
    assert len(posted) == 1


def test_shift4_a_capture_it_refuses_is_a_configuration_error(httpserver: HTTPServer) -> None:
    error = {"error": {"type": "invalid_request", "message": "Charge already captured"}}
    serve_s4(httpserver, "/charges/char_9kQx/capture", s4(error, status=400))

    with pytest.raises(GatewayConfigurationError):
        make_shift4(httpserver.url_for("")).capture(
            "char_9kQx", 1999, idempotency_key="pd-4-capture-2"
        )
