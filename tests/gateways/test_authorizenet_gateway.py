"""Authorize.net: the official SDK against a local server speaking its XML API (with the BOM)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from authorizenet import apicontrollersbase
from lxml import etree
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from gateways import build_gateway
from gateways.authorizenet import AuthorizeNetGateway
from gateways.base import (
    CardDeclined,
    GatewayConfigurationError,
    GatewayOutcomeUnknown,
    GatewayUnavailable,
    NotVoidable,
    short_reference,
)
from tests.gateways.gateway_helpers import (
    CLIENT_TIMEOUT,
    make_look_up,
    make_request,
    recorder,
    stall,
)

BOM = b"\xef\xbb\xbf"
NS = 'xmlns="AnetApi/xml/v1/schema/AnetApiSchema.xsd"'
PATH = "/xml/v1/request.api"


def anet(xml: str, status: int = 200) -> Response:
    """Authorize.net answers with a UTF-8 BOM before the XML declaration."""
    body = BOM + b'<?xml version="1.0" encoding="utf-8"?>' + xml.encode()
    return Response(body, status=status, content_type="application/xml; charset=utf-8")


def messages(code: str = "I00001", text: str = "Successful.") -> str:
    result = "Ok" if code.startswith("I") else "Error"
    return (
        f"<messages><resultCode>{result}</resultCode>"
        f"<message><code>{code}</code><text>{text}</text></message></messages>"
    )


def transaction_answer(
    response_code: str = "1", error_code: str | None = None, trans_id: str = "60012345678"
) -> str:
    errors = (
        f"<errors><error><errorCode>{error_code}</errorCode>"
        "<errorText>This transaction has been declined.</errorText></error></errors>"
        if error_code
        else ""
    )
    approved = response_code == "1"
    return (
        f"<createTransactionResponse {NS}><refId>r</refId>"
        + (messages() if approved else messages("E00027", "The transaction was unsuccessful."))
        + f"<transactionResponse><responseCode>{response_code}</responseCode>"
        + ("<authCode>ABC123</authCode>" if approved else "<authCode />")
        + "<avsResultCode>Y</avsResultCode><cvvResultCode>M</cvvResultCode>"
        + "<cavvResultCode>2</cavvResultCode>"
        + f"<transId>{trans_id if approved else '0'}</transId>"
        + "<accountNumber>XXXX4242</accountNumber><accountType>Visa</accountType>"
        + errors
        + "<networkTransId>NTID0123456789ABCDEFGHI</networkTransId>"
        + "</transactionResponse></createTransactionResponse>"
    )


def xml_of(body: bytes) -> Any:
    return etree.fromstring(body)


def first(root: Any, name: str) -> str | None:
    found = root.xpath(f"//*[local-name()='{name}']/text()")
    return str(found[0]) if found else None


def make_anet(url: str, timeout: float = 5.0, login: str = "login1") -> AuthorizeNetGateway:
    gateway = build_gateway(
        "authorizenet",
        {"api_login_id": login, "transaction_key": "key1", "api_base": url + PATH},
        environment="test",
        timeout=timeout,
    )
    assert isinstance(gateway, AuthorizeNetGateway)
    return gateway


@pytest.fixture
def anet_url(httpserver: HTTPServer) -> str:
    return httpserver.url_for("").rstrip("/")


def serve(httpserver: HTTPServer, answer: Any) -> list[dict[str, Any]]:
    handler = answer if callable(answer) else (lambda _: anet(answer))
    seen, recording = recorder(handler)
    httpserver.expect_request(PATH, method="POST").respond_with_handler(recording)
    return seen


def test_a_charge_sends_amount_card_avs_address_and_duplicate_window(
    httpserver: HTTPServer, anet_url: str
) -> None:
    seen = serve(httpserver, transaction_answer())
    request = make_request(key="pd-sess1-1")

    result = make_anet(anet_url).charge(request)

    sent = xml_of(seen[0]["body"])
    assert etree.QName(sent).localname == "createTransactionRequest"
    assert first(sent, "name") == "login1"
    assert first(sent, "transactionKey") == "key1"
    assert first(sent, "transactionType") == "authCaptureTransaction"
    assert first(sent, "amount") == "19.99"
    assert first(sent, "currencyCode") == "USD"
    assert first(sent, "cardNumber") == "4242424242424242"
    assert first(sent, "expirationDate") == "2031-12"
    assert first(sent, "cardCode") == "987"
    assert first(sent, "zip") == "94107"  # the ZIP the caller keyed wins over the address's
    assert first(sent, "address") == "1 Main St"
    assert first(sent, "firstName") == "Ada"
    assert first(sent, "settingName") == "duplicateWindow"
    assert first(sent, "settingValue") == "28800"
    assert first(sent, "refId") == short_reference("pd-sess1-1")
    assert first(sent, "invoiceNumber") == short_reference("pd-sess1-1")
    assert result.outcome == "captured"
    assert result.transaction_id == "60012345678"
    assert result.processor == {
        "authnet_transaction_id": "60012345678",
        "authnet_auth_code": "ABC123",
        "authnet_response_code": "1",
        "authnet_avs_result_code": "Y",
        "authnet_cvv_result_code": "M",
        "authnet_cavv_result_code": "2",
        "authnet_network_trans_id": "NTID0123456789ABCDEFGHI",
        "authnet_capture_status": "capturedPendingSettlement",
        "authnet_customer_profile_id": None,
        "authnet_payment_profile_id": None,
    }


def test_auth_only_sends_an_auth_only_transaction_and_reports_authorized(
    httpserver: HTTPServer, anet_url: str
) -> None:
    seen = serve(httpserver, transaction_answer())

    result = make_anet(anet_url).authorize(make_request())

    assert first(xml_of(seen[0]["body"]), "transactionType") == "authOnlyTransaction"
    assert result.outcome == "authorized"


@pytest.mark.parametrize(
    ("response_code", "error_code", "reason"),
    [
        ("2", "2", "card_declined"),
        ("2", "27", "incorrect_zip"),
        ("2", "44", "incorrect_cvc"),
        ("3", "8", "expired_card"),
        ("3", "6", "invalid_number"),
        ("3", "19", "processing_error"),
    ],
)
def test_declines_map_to_normalized_reasons(
    httpserver: HTTPServer, anet_url: str, response_code: str, error_code: str, reason: str
) -> None:
    serve(httpserver, transaction_answer(response_code, error_code))

    with pytest.raises(CardDeclined) as caught:
        make_anet(anet_url).charge(make_request())

    assert caught.value.reason == reason
    assert caught.value.processor_code == error_code


def test_a_duplicate_rejection_means_an_earlier_try_landed(
    httpserver: HTTPServer, anet_url: str
) -> None:
    serve(httpserver, transaction_answer("3", "11"))

    with pytest.raises(GatewayOutcomeUnknown):
        make_anet(anet_url).charge(make_request())


def test_an_authentication_failure_is_a_configuration_error(
    httpserver: HTTPServer, anet_url: str
) -> None:
    serve(
        httpserver,
        f"<ErrorResponse {NS}>"
        + messages("E00007", "User authentication failed due to invalid authentication values.")
        + "</ErrorResponse>",
    )

    with pytest.raises(GatewayConfigurationError) as caught:
        make_anet(anet_url).charge(make_request())
    assert caught.value.processor_code == "E00007"


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (Response("upstream down", status=503), GatewayUnavailable),
        (Response("internal error", status=500), GatewayOutcomeUnknown),
        (Response(BOM + b"<html>not xml", status=200), GatewayOutcomeUnknown),
    ],
)
def test_http_failures_and_malformed_bodies_map_to_the_error_tree(
    httpserver: HTTPServer, anet_url: str, answer: Response, error: type[Exception]
) -> None:
    serve(httpserver, lambda _: answer)

    with pytest.raises(error):
        make_anet(anet_url).charge(make_request())


def test_a_refused_connection_is_unavailable(refused_url: str) -> None:
    with pytest.raises(GatewayUnavailable):
        make_anet(refused_url).charge(make_request())


def test_a_stalled_gateway_times_out_as_an_unknown_outcome(
    httpserver: HTTPServer, anet_url: str
) -> None:
    serve(httpserver, stall(anet(transaction_answer())))

    with pytest.raises(GatewayOutcomeUnknown):
        make_anet(anet_url, timeout=CLIENT_TIMEOUT).charge(make_request())


PROFILE_OK = (
    f"<createCustomerProfileResponse {NS}>{messages()}"
    "<customerProfileId>900001</customerProfileId>"
    "<customerPaymentProfileIdList><numericString>800001</numericString>"
    "</customerPaymentProfileIdList>"
    "<customerShippingAddressIdList /><validationDirectResponseList>"
    "<string>1,1,1,This transaction has been approved.,A1B2C3,Y,0,,,0.00,CC</string>"
    "</validationDirectResponseList></createCustomerProfileResponse>"
)
PROFILE_DECLINED = (
    f"<createCustomerProfileResponse {NS}>"
    + messages("E00027", "This transaction has been declined.")
    + "<customerPaymentProfileIdList /><customerShippingAddressIdList />"
    "<validationDirectResponseList>"
    "<string>2,1,2,This transaction has been declined.,,P,0,,,0.00,CC</string>"
    "</validationDirectResponseList></createCustomerProfileResponse>"
)


def test_tokenize_creates_a_customer_profile_validated_in_live_mode(
    httpserver: HTTPServer, anet_url: str
) -> None:
    seen = serve(httpserver, PROFILE_OK)

    result = make_anet(anet_url).tokenize(make_request(key="pd-tok-1", amount_cents=0))

    sent = xml_of(seen[0]["body"])
    assert etree.QName(sent).localname == "createCustomerProfileRequest"
    assert first(sent, "validationMode") == "liveMode"
    assert first(sent, "merchantCustomerId") == short_reference("pd-tok-1")
    assert first(sent, "cardNumber") == "4242424242424242"
    assert result.outcome == "tokenized"
    assert result.processor["authnet_customer_profile_id"] == "900001"
    assert result.processor["authnet_payment_profile_id"] == "800001"


def test_tokenize_reports_a_failed_card_validation_as_a_decline(
    httpserver: HTTPServer, anet_url: str
) -> None:
    serve(httpserver, PROFILE_DECLINED)

    with pytest.raises(CardDeclined) as caught:
        make_anet(anet_url).tokenize(make_request())
    assert caught.value.reason == "card_declined"


def reconcile_server(invoice: str | None) -> Any:
    """Answers the unsettled list (holding `invoice` if given), details, and profile lookups."""

    def answer(request: Request) -> Response:
        kind = etree.QName(xml_of(request.get_data())).localname
        if kind == "getUnsettledTransactionListRequest":
            rows = (
                f"<transactions><transaction><transId>60077</transId>"
                f"<invoiceNumber>{invoice}</invoiceNumber></transaction></transactions>"
                "<totalNumInResultSet>1</totalNumInResultSet>"
                if invoice
                else "<totalNumInResultSet>0</totalNumInResultSet>"
            )
            code = "I00001" if invoice else "I00004"
            return anet(
                f"<getUnsettledTransactionListResponse {NS}>{messages(code)}{rows}"
                "</getUnsettledTransactionListResponse>"
            )
        if kind == "getTransactionDetailsRequest":
            return anet(
                f"<getTransactionDetailsResponse {NS}>{messages()}<transaction>"
                "<transId>60077</transId><transactionType>authCaptureTransaction</transactionType>"
                "<transactionStatus>capturedPendingSettlement</transactionStatus>"
                "<responseCode>1</responseCode><responseReasonCode>1</responseReasonCode>"
                "<authCode>XYZ789</authCode><AVSResponse>Y</AVSResponse>"
                "<cardCodeResponse>M</cardCodeResponse></transaction>"
                "</getTransactionDetailsResponse>"
            )
        return anet(
            f"<ErrorResponse {NS}>"
            + messages("E00040", "The record cannot be found.")
            + "</ErrorResponse>"
        )

    return answer


def test_reconcile_finds_a_charge_by_its_invoice_number(
    httpserver: HTTPServer, anet_url: str
) -> None:
    serve(httpserver, reconcile_server(short_reference("pd-lost-1")))

    result = make_anet(anet_url).reconcile(make_look_up("pd-lost-1"))

    assert result is not None
    assert result.outcome == "captured"
    assert result.processor["authnet_transaction_id"] == "60077"
    assert result.processor["authnet_auth_code"] == "XYZ789"


def test_reconcile_answers_none_when_neither_a_charge_nor_a_profile_exists(
    httpserver: HTTPServer, anet_url: str
) -> None:
    serve(httpserver, reconcile_server(None))

    assert make_anet(anet_url).reconcile(make_look_up("pd-lost-2")) is None


@pytest.fixture
def racy_sdk(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Widen the SDK's own race: a pause right after it stores the endpoint in a class-global."""
    original = apicontrollersbase.APIOperationBase.setenvironment

    def slow_setenvironment(endpoint: str) -> None:
        original(endpoint)
        time.sleep(0.002)

    monkeypatch.setattr(
        apicontrollersbase.APIOperationBase, "setenvironment", staticmethod(slow_setenvironment)
    )
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


def test_concurrent_charges_never_cross_endpoints_or_credentials(racy_sdk: None) -> None:
    servers = [HTTPServer(port=0), HTTPServer(port=0)]
    crossed: list[str] = []
    try:
        gateways = []
        for index, server in enumerate(servers):
            login = f"merchant{index}"

            def answer(request: Request, login: str = login, index: int = index) -> Response:
                if first(xml_of(request.get_data()), "name") != login:
                    crossed.append(login)
                return anet(transaction_answer(trans_id=f"{index}000"))

            server.expect_request(PATH).respond_with_handler(answer)
            server.start()
            gateways.append(make_anet(server.url_for("").rstrip("/"), login=login))

        def charge(n: int) -> tuple[int, str | None]:
            return n % 2, gateways[n % 2].charge(make_request()).transaction_id

        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(charge, range(60)))
    finally:
        for server in servers:
            if server.is_running():
                server.stop()

    assert crossed == []
    assert all(txn == f"{index}000" for index, txn in results)
    assert [len(server.log) for server in servers] == [30, 30]


def paged_unsettled_server(invoice: str, *, total: int, position: int) -> Any:
    """`total` unsettled transactions newest first, ours at `position`, served page by page."""

    def answer(request: Request) -> Response:
        sent = xml_of(request.get_data())
        kind = etree.QName(sent).localname
        if kind != "getUnsettledTransactionListRequest":
            return reconcile_server(invoice)(request)
        limit, page = int(first(sent, "limit") or 0), int(first(sent, "offset") or 0)
        rows = "".join(
            f"<transaction><transId>{7000 + n}</transId><invoiceNumber>"
            f"{invoice if n == position else f'pdother{n}'}</invoiceNumber></transaction>"
            for n in range((page - 1) * limit, min(page * limit, total))
        )
        return anet(
            f"<getUnsettledTransactionListResponse {NS}>{messages()}"
            f"<transactions>{rows}</transactions>"
            f"<totalNumInResultSet>{total}</totalNumInResultSet>"
            "</getUnsettledTransactionListResponse>"
        )

    return answer


def test_reconcile_finds_a_charge_behind_more_than_a_page_of_newer_ones(
    httpserver: HTTPServer, anet_url: str
) -> None:
    invoice = short_reference("pd-buried-1")
    seen = serve(httpserver, paged_unsettled_server(invoice, total=1150, position=1120))

    result = make_anet(anet_url).reconcile(make_look_up("pd-buried-1"))

    assert result is not None and result.outcome == "captured"
    pages = [first(xml_of(s["body"]), "offset") for s in seen]
    assert pages[:2] == ["1", "2"]
    assert first(xml_of(seen[2]["body"]), "transId") == str(7000 + 1120)


def test_void_sends_a_void_transaction_for_the_reference(
    httpserver: HTTPServer, anet_url: str
) -> None:
    seen = serve(httpserver, transaction_answer(trans_id="60099"))

    reversal = make_anet(anet_url).void("60012345678", idempotency_key="pd-s-1-void")

    sent = xml_of(seen[0]["body"])
    assert first(sent, "transactionType") == "voidTransaction"
    assert first(sent, "refTransId") == "60012345678"
    assert first(sent, "refId") == short_reference("pd-s-1-void")
    assert (reversal.kind, reversal.reference, reversal.reversal_id) == (
        "void",
        "60012345678",
        "60099",
    )


def test_a_refused_void_means_refund_instead(httpserver: HTTPServer, anet_url: str) -> None:
    serve(httpserver, transaction_answer("3", error_code="16"))

    with pytest.raises(NotVoidable):
        make_anet(anet_url).void("60012345678", idempotency_key="pd-s-1-void")


def test_refund_sends_the_last_four_from_the_transaction_details(
    httpserver: HTTPServer, anet_url: str
) -> None:
    def answer(request: Request) -> Response:
        if etree.QName(xml_of(request.get_data())).localname == "getTransactionDetailsRequest":
            return anet(
                f"<getTransactionDetailsResponse {NS}>{messages()}<transaction>"
                "<transId>60012345678</transId>"
                "<transactionStatus>settledSuccessfully</transactionStatus><payment><creditCard>"
                "<cardNumber>XXXX4242</cardNumber><expirationDate>XXXX</expirationDate>"
                "</creditCard></payment></transaction></getTransactionDetailsResponse>"
            )
        return anet(transaction_answer(trans_id="60100"))

    seen = serve(httpserver, answer)

    reversal = make_anet(anet_url).refund("60012345678", 1999, idempotency_key="pd-s-1-refund")

    sent = xml_of(seen[1]["body"])
    assert first(sent, "transactionType") == "refundTransaction"
    assert first(sent, "refTransId") == "60012345678"
    assert first(sent, "amount") == "19.99"
    assert (first(sent, "cardNumber"), first(sent, "expirationDate")) == ("4242", "XXXX")
    assert (reversal.kind, reversal.reversal_id, reversal.amount_cents) == ("refund", "60100", 1999)
