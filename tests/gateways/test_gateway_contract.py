"""One contract for every adapter and the simulator: charge, tokenize, decline, result shape,
and reconciliation from a look-up that holds no card."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from lxml import etree
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from gateways import build_gateway
from gateways.base import PROCESSOR_FIELDS, CardDeclined, LookUp, PaymentGateway, short_reference
from gateways.shift4 import METADATA_KEY
from tests.gateways.gateway_helpers import make_look_up, make_request

DECLINED = "4000000000000002"
# localstripe declines 0002 only when attaching; at charge time it declines 0341.
LOCALSTRIPE_DECLINED = "4000000000000341"
BOM = b"\xef\xbb\xbf"
ANET_NS = 'xmlns="AnetApi/xml/v1/schema/AnetApiSchema.xsd"'
# The one attempt the fakes below hold a record of when asked to look one up.
LOST_KEY = f"pd-contract{uuid.uuid4().hex[:12]}-1"


def anet_look_up(kind: str) -> Response:
    """The unsettled list (holding the lost attempt), its details, and no customer profile."""
    ok = "<resultCode>Ok</resultCode><message><code>I00001</code><text>Ok.</text></message>"
    if kind == "getUnsettledTransactionListRequest":
        xml = (
            f"<getUnsettledTransactionListResponse {ANET_NS}><messages>{ok}</messages>"
            "<transactions><transaction><transId>6001</transId>"
            f"<invoiceNumber>{short_reference(LOST_KEY)}</invoiceNumber></transaction>"
            "</transactions><totalNumInResultSet>1</totalNumInResultSet>"
            "</getUnsettledTransactionListResponse>"
        )
    elif kind == "getTransactionDetailsRequest":
        xml = (
            f"<getTransactionDetailsResponse {ANET_NS}><messages>{ok}</messages><transaction>"
            "<transId>6001</transId><transactionType>authCaptureTransaction</transactionType>"
            "<responseCode>1</responseCode><authCode>A1</authCode><AVSResponse>Y</AVSResponse>"
            "<cardCodeResponse>M</cardCodeResponse></transaction></getTransactionDetailsResponse>"
        )
    else:
        xml = (
            f"<ErrorResponse {ANET_NS}><messages><resultCode>Error</resultCode><message>"
            "<code>E00040</code><text>The record cannot be found.</text></message></messages>"
            "</ErrorResponse>"
        )
    return Response(BOM + xml.encode(), content_type="application/xml")


def anet_fake(request: Request) -> Response:
    """Approves or declines by card number, like the sandbox does with its test cards."""
    sent = etree.fromstring(request.get_data())
    kind = etree.QName(sent).localname
    if kind.startswith("get"):
        return anet_look_up(kind)
    card = sent.xpath("//*[local-name()='cardNumber']/text()")[0]
    ok = card != DECLINED
    result = "<resultCode>Ok</resultCode><message><code>I00001</code><text>Ok.</text></message>"
    failed = "<resultCode>Error</resultCode><message><code>E00027</code><text>No.</text></message>"
    if kind == "createCustomerProfileRequest":
        xml = (
            f"<createCustomerProfileResponse {ANET_NS}><messages>{result if ok else failed}"
            "</messages>"
            + (
                "<customerProfileId>91</customerProfileId><customerPaymentProfileIdList>"
                "<numericString>81</numericString></customerPaymentProfileIdList>"
                if ok
                else "<validationDirectResponseList><string>2,1,2,Declined.</string>"
                "</validationDirectResponseList>"
            )
            + "</createCustomerProfileResponse>"
        )
    else:
        xml = (
            f"<createTransactionResponse {ANET_NS}><messages>{result if ok else failed}"
            f"</messages><transactionResponse><responseCode>{1 if ok else 2}</responseCode>"
            "<authCode>A1</authCode><avsResultCode>Y</avsResultCode>"
            "<cvvResultCode>M</cvvResultCode><transId>6001</transId>"
            + ("" if ok else "<errors><error><errorCode>2</errorCode></error></errors>")
            + "</transactionResponse></createTransactionResponse>"
        )
    return Response(BOM + xml.encode(), content_type="application/xml")


BRAINTREE_SALE = (
    "<transaction><id>bt1</id><status>submitted_for_settlement</status><amount>19.99</amount>"
    "</transaction>"
)


def braintree_look_up(request: Request) -> Response:
    """Search by order id (only the lost attempt's is there); no customer in the vault."""
    if request.method == "GET":
        return Response("", status=404)
    if request.path.endswith("/advanced_search"):
        xml = f'<credit-card-transactions type="collection">{BRAINTREE_SALE}'
        return Response(xml + "</credit-card-transactions>", content_type="application/xml")
    lost = etree.fromstring(request.get_data()).findtext("order_id/is") == LOST_KEY
    xml = '<search-results><page-size type="integer">50</page-size><ids type="array">'
    xml += ("<item>bt1</item>" if lost else "") + "</ids></search-results>"
    return Response(xml, content_type="application/xml")


def braintree_fake(request: Request) -> Response:
    if "advanced_search" in request.path or request.method == "GET":
        return braintree_look_up(request)
    sent = etree.fromstring(request.get_data())
    if sent.findtext(".//number") == DECLINED:
        xml = (
            '<api-error-response><errors><errors type="array"/></errors>'
            "<message>Do Not Honor</message>"
            "<transaction><id>d1</id><status>processor_declined</status><amount>1.00</amount>"
            "<processor-response-code>2000</processor-response-code></transaction>"
            "<verification><id>v1</id><status>processor_declined</status>"
            "<processor-response-code>2000</processor-response-code></verification>"
            "</api-error-response>"
        )
        if sent.tag == "customer":
            xml = xml.replace(
                "<transaction><id>d1</id><status>processor_declined</status><amount>1.00</amount>"
                "<processor-response-code>2000</processor-response-code></transaction>",
                "",
            )
        return Response(xml, status=422, content_type="application/xml")
    if sent.tag == "customer":
        xml = (
            '<customer><id>c1</id><credit-cards type="array"><credit-card><token>tk1</token>'
            "</credit-card></credit-cards></customer>"
        )
    else:
        xml = BRAINTREE_SALE
    return Response(xml, status=201, content_type="application/xml")


SHIFT4_CHARGE = {"id": "char_1", "status": "successful", "captured": True}


def shift4_fake(request: Request) -> Response:
    body: dict[str, Any]
    if request.method == "GET":  # a look-up: only the lost attempt's charge, no customers
        tagged = {**SHIFT4_CHARGE, "metadata": {METADATA_KEY: LOST_KEY}}
        body = {"list": [tagged] if request.path == "/charges" else [], "hasMore": False}
        return Response(json.dumps(body), content_type="application/json")
    sent = json.loads(request.get_data())
    if sent["card"]["number"] == DECLINED:
        body = {"error": {"type": "card_error", "code": "card_declined"}}
        return Response(json.dumps(body), status=402, content_type="application/json")
    if request.path == "/customers":
        body = {"id": "cust_1", "defaultCardId": "card_1"}
    else:
        body = SHIFT4_CHARGE
    return Response(json.dumps(body), content_type="application/json")


@pytest.fixture(params=["stripe", "authorizenet", "braintree", "shift4", "simulator"])
def adapter(
    request: pytest.FixtureRequest, httpserver: HTTPServer
) -> Iterator[tuple[str, PaymentGateway, str]]:
    """(gateway name, adapter, a card that this adapter's counterpart declines)."""
    name: str = request.param
    url = httpserver.url_for("").rstrip("/")
    fakes: dict[str, tuple[Callable[[Request], Response], dict[str, str]]] = {
        "authorizenet": (
            anet_fake,
            {"api_login_id": "l", "transaction_key": "k", "api_base": url + "/xml"},
        ),
        "braintree": (
            braintree_fake,
            {"merchant_id": "mid", "public_key": "p", "private_key": "s", "api_base": url},
        ),
        "shift4": (shift4_fake, {"secret_key": "sk", "api_base": url}),
    }
    if name == "simulator":
        yield "stripe", build_gateway("stripe", None, environment="test"), DECLINED
    elif name == "stripe":
        credentials = {
            "secret_key": "sk_test_contract",
            "api_base": request.getfixturevalue("localstripe_url"),
        }
        yield name, build_gateway(name, credentials, environment="test"), LOCALSTRIPE_DECLINED
    else:
        handler, credentials = fakes[name]
        lost_customer = "/merchants/mid/customers/" + short_reference("pd-never-sent-1", 36)
        for path in (
            "/xml",
            "/merchants/mid/transactions",
            "/merchants/mid/transactions/advanced_search_ids",
            "/merchants/mid/transactions/advanced_search",
            "/merchants/mid/customers",
            lost_customer,
        ):
            httpserver.expect_request(path).respond_with_handler(handler)
        httpserver.expect_request("/charges").respond_with_handler(handler)
        httpserver.expect_request("/customers").respond_with_handler(handler)
        yield name, build_gateway(name, credentials, environment="test"), DECLINED


def test_an_approved_charge_is_captured_with_every_processor_field(
    adapter: tuple[str, PaymentGateway, str],
) -> None:
    name, gateway, _ = adapter

    result = gateway.charge(make_request(description=None))

    assert result.outcome == "captured"
    assert result.transaction_id
    assert (result.card_brand, result.card_last4) == ("visa", "4242")
    assert set(result.processor) == set(PROCESSOR_FIELDS[name])


def test_tokenize_saves_the_card_without_a_charge(
    adapter: tuple[str, PaymentGateway, str],
) -> None:
    name, gateway, _ = adapter

    result = gateway.tokenize(make_request(amount_cents=0, description=None))

    assert result.outcome == "tokenized"
    assert set(result.processor) == set(PROCESSOR_FIELDS[name])
    assert any(result.processor.values())


def test_a_declined_card_raises_card_declined(
    adapter: tuple[str, PaymentGateway, str],
) -> None:
    _, gateway, declining_card = adapter

    with pytest.raises(CardDeclined) as caught:
        gateway.charge(make_request(declining_card, description=None))
    assert caught.value.code == caught.value.reason == "card_declined"


def test_reconcile_finds_an_attempt_from_a_look_up_that_holds_no_card(
    adapter: tuple[str, PaymentGateway, str],
) -> None:
    """All the core keeps of a lost attempt is its key, amount, brand and last four: enough."""
    _, gateway, _ = adapter
    charged = gateway.charge(make_request(key=LOST_KEY, description=None))

    found = gateway.reconcile(make_look_up(LOST_KEY))

    assert found == charged
    assert {"idempotency_key", "amount_cents", "card_brand", "card_last4"} == set(
        LookUp.__dataclass_fields__
    )


def test_reconcile_answers_none_for_an_attempt_the_gateway_never_saw(
    adapter: tuple[str, PaymentGateway, str],
) -> None:
    _, gateway, _ = adapter

    assert gateway.reconcile(make_look_up("pd-never-sent-1")) is None
