"""Authorize.net through its official SDK (XML API): authCapture, authOnly, customer profiles.

The SDK keeps its endpoint in a class-global that every controller's constructor resets, posts
without a timeout and swallows transport failures into a None response. So every call here runs
under one module lock, through a `requests` shim that adds our timeout and remembers what failed.
The SDK has read its endpoint (set by us under the lock) before it posts, so the shim lets go of
the lock while the request is on the wire: calls from many threads wait on the network together.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, ClassVar

from authorizenet import apicontractsv1 as contracts
from authorizenet import apicontrollers, apicontrollersbase
from authorizenet.constants import constants
from lxml import etree

from gateways._http import (
    TimeoutRequests,
    quiet_debug_log,
    scrub,
    status_error,
    transport_error,
)
from gateways.base import (
    CardDeclined,
    DeclineReason,
    GatewayConfigurationError,
    GatewayOutcomeUnknown,
    GatewayUnavailable,
    LookUp,
    NotRefundable,
    NotVoidable,
    PaymentRequest,
    PaymentResult,
    ResultKind,
    ReversalKind,
    ReversalResult,
    processor_fields,
    require,
    short_reference,
)

_SDK_LOCK = threading.Lock()
_TRANSPORT = TimeoutRequests()
_installed = False

# How long Authorize.net rejects a resubmission of the same invoice, card and amount (its maximum).
DUPLICATE_WINDOW_SECONDS = 28800
RECONCILE_PAGE = 1000
# A fresh transaction's status in Authorize.net's own words (getTransactionDetails
# `transactionStatus`): https://developer.authorize.net/api/reference/index.html
CAPTURE_STATUS = {"captured": "capturedPendingSettlement", "authorized": "authorizedPendingCapture"}

# transactionResponse error codes (response reason codes) -> our reasons.
_REASONS: dict[str, DeclineReason] = {
    "6": "invalid_number",
    "37": "invalid_number",
    "7": "expired_card",
    "8": "expired_card",
    "27": "incorrect_zip",
    "127": "incorrect_zip",
    "44": "incorrect_cvc",
    "45": "incorrect_cvc",
    "65": "incorrect_cvc",
    "19": "processing_error",
    "20": "processing_error",
    "21": "processing_error",
    "22": "processing_error",
    "23": "processing_error",
    "25": "processing_error",
    "26": "processing_error",
    "57": "processing_error",
}
DUPLICATE_TRANSACTION = "11"
_CREDENTIAL_ERRORS = {"E00007", "E00008", "E00009", "E00011", "E00054"}
# transactionStatus values (https://developer.authorize.net/api/reference/features/
# transaction-reporting.html): what a refund needs, what a capture and a void leave behind.
SETTLED = "settledSuccessfully"
CAPTURED = {"capturedPendingSettlement", SETTLED}
VOIDED = "voided"


def _install_transport() -> None:
    """Swap the SDK's `requests` for our shim and quiet its debug log, which dumps request XML."""
    global _installed
    if not _installed:
        apicontrollersbase.requests = _TRANSPORT
        quiet_debug_log(constants.defaultLoggerName)
        _installed = True


def _local(element: Any) -> str:
    return str(etree.QName(element).localname)


def _child(element: Any, *path: str) -> Any | None:
    """Namespace-agnostic walk: the SDK hands back elements with or without the Anet namespace."""
    for name in path:
        if element is None:
            return None
        element = next((c for c in element.iterchildren() if _local(c) == name), None)
    return element


def _children(element: Any, name: str) -> list[Any]:
    return [c for c in element.iterchildren() if _local(c) == name] if element is not None else []


def _text(element: Any, *path: str) -> str | None:
    found = _child(element, *path)
    if found is None or found.text is None:
        return None
    return str(found.text).strip() or None


class AuthorizeNetGateway:
    """One credential set and endpoint; thread-safe: the SDK's globals are set under the lock."""

    name = "authorizenet"
    required_credentials: ClassVar[tuple[str, ...]] = ("api_login_id", "transaction_key")

    def __init__(
        self, *, api_login_id: str, transaction_key: str, endpoint: str, timeout: float = 10.0
    ) -> None:
        self._login = api_login_id
        self._key = transaction_key
        self.endpoint = endpoint
        self._timeout = timeout
        with _SDK_LOCK:
            _install_transport()

    def __repr__(self) -> str:
        return f"AuthorizeNetGateway(endpoint={self.endpoint!r})"

    @classmethod
    def from_credentials(
        cls, credentials: Mapping[str, str], *, timeout: float, environment: str = "test"
    ) -> AuthorizeNetGateway:
        login, key = require(credentials, *cls.required_credentials)
        default = constants.PRODUCTION if environment == "live" else constants.SANDBOX
        return cls(
            api_login_id=login,
            transaction_key=key,
            endpoint=credentials.get("api_base") or default,
            timeout=timeout,
        )

    def charge(self, request: PaymentRequest) -> PaymentResult:
        return self._transact(request, "authCaptureTransaction", "captured")

    def authorize(self, request: PaymentRequest) -> PaymentResult:
        return self._transact(request, "authOnlyTransaction", "authorized")

    def tokenize(self, request: PaymentRequest) -> PaymentResult:
        payment_profile = contracts.customerPaymentProfileType()
        payment_profile.payment = _payment(request)
        bill_to = _bill_to(request)
        if bill_to is not None:
            payment_profile.billTo = bill_to
        profile = contracts.customerProfileType()
        profile.merchantCustomerId = short_reference(request.idempotency_key)
        if request.description:
            profile.description = request.description[:255]
        profile.paymentProfiles = [payment_profile]
        api_request = contracts.createCustomerProfileRequest()
        api_request.refId = short_reference(request.idempotency_key)
        api_request.profile = profile
        api_request.validationMode = "liveMode"
        response = self._execute(apicontrollers.createCustomerProfileController, api_request)
        code, text = _message(response)
        if code == "I00001":
            payment_ids = _children(
                _child(response, "customerPaymentProfileIdList"), "numericString"
            )
            return self._tokenized(
                request.as_look_up(),
                _text(response, "customerProfileId"),
                str(payment_ids[0].text) if payment_ids else None,
            )
        if code == "E00039":  # a profile with our merchantCustomerId exists: an earlier try landed
            raise GatewayOutcomeUnknown("authorizenet already holds a profile for this attempt")
        validation = _text(response, "validationDirectResponseList", "string")
        if validation:
            fields = validation.split(",")
            if len(fields) > 3 and fields[0] != "1":
                raise _decline(fields[2], fields[3])
        raise _api_error(code, text)

    def reconcile(self, look_up: LookUp) -> PaymentResult | None:
        """Look for our invoice number among unsettled transactions, then our customer profile."""
        trans_id = self._find_unsettled(short_reference(look_up.idempotency_key))
        if trans_id is not None:
            return self._transaction_details(look_up, trans_id)
        profile_request = contracts.getCustomerProfileRequest()
        profile_request.merchantCustomerId = short_reference(look_up.idempotency_key)
        response = self._execute(apicontrollers.getCustomerProfileController, profile_request)
        code, text = _message(response)
        if code == "I00001":
            profile = _child(response, "profile")
            return self._tokenized(
                look_up,
                _text(profile, "customerProfileId"),
                _text(profile, "paymentProfiles", "customerPaymentProfileId"),
            )
        if code != "E00040":  # E00040: the record cannot be found
            raise _api_error(code, text)
        return None

    def _find_unsettled(self, invoice_number: str) -> str | None:
        """The transId carrying our invoice number, newest first, through every page.

        https://developer.authorize.net/api/reference/index.html#transaction-reporting-get-unsettled-transaction-list
        """
        offset = 1
        while True:
            listing = contracts.getUnsettledTransactionListRequest()
            listing.sorting = contracts.TransactionListSorting()
            listing.sorting.orderBy = contracts.TransactionListOrderFieldEnum.submitTimeUTC
            listing.sorting.orderDescending = True
            listing.paging = contracts.Paging()
            listing.paging.limit = RECONCILE_PAGE
            listing.paging.offset = offset  # the page number, from 1
            page = self._execute(apicontrollers.getUnsettledTransactionListController, listing)
            code, text = _message(page)
            if code == "I00004":  # no records found
                return None
            if code != "I00001":
                raise _api_error(code, text)
            summaries = _children(_child(page, "transactions"), "transaction")
            for summary in summaries:
                if _text(summary, "invoiceNumber") == invoice_number:
                    return _text(summary, "transId")
            total = int(_text(page, "totalNumInResultSet") or 0)
            if not summaries or offset * RECONCILE_PAGE >= total:
                return None
            offset += 1

    def void(self, reference: str, *, idempotency_key: str) -> ReversalResult:
        """voidTransaction: only before settlement; any refusal means refund instead."""
        response = self._follow_up("voidTransaction", reference, idempotency_key)
        result = _child(response, "transactionResponse")
        if _text(result, "responseCode") == "1":
            return ReversalResult("void", reference, _text(result, "transId"))
        code, text = _message(response)
        if code in ("E00001", *_CREDENTIAL_ERRORS):
            raise _api_error(code, text)
        raise NotVoidable(
            "authorizenet refused the void",
            processor_code=_text(result, "errors", "error", "errorCode"),
        )

    def check_refundable(self, reference: str) -> None:
        """getTransactionDetails: refundTransaction takes settled payments only."""
        self._settled(reference)

    def refund(self, reference: str, amount_cents: int, *, idempotency_key: str) -> ReversalResult:
        """refundTransaction needs the card's last four, which the transaction details give; they
        are read again here, since the payment may not have settled yet (NotRefundable)."""
        found = self._settled(reference)
        masked = _text(found, "transaction", "payment", "creditCard", "cardNumber") or ""
        card = contracts.creditCardType()
        card.cardNumber = masked[-4:]
        card.expirationDate = "XXXX"
        payment = contracts.paymentType()
        payment.creditCard = card
        response = self._follow_up(
            "refundTransaction",
            reference,
            idempotency_key,
            amount_cents=amount_cents,
            payment=payment,
        )
        return self._accepted(response, "refund", reference, amount_cents)

    def capture(self, reference: str, amount_cents: int, *, idempotency_key: str) -> ReversalResult:
        """priorAuthCaptureTransaction of an authOnly transaction, for at most its amount."""
        response = self._follow_up(
            "priorAuthCaptureTransaction", reference, idempotency_key, amount_cents=amount_cents
        )
        return self._accepted(response, "capture", reference, amount_cents)

    def find_reversal(
        self, kind: ReversalKind, reference: str, *, idempotency_key: str
    ) -> ReversalResult | None:
        """A refund by its invoice number among unsettled transactions (it is a transaction of
        its own); a capture or a void by the status it left on the original transaction."""
        if kind == "refund":
            trans_id = self._find_unsettled(short_reference(idempotency_key))
            if trans_id is None:
                return None
            amount = _text(self._details(trans_id), "transaction", "settleAmount")
            return ReversalResult("refund", reference, trans_id, _cents(amount))
        transaction = _child(self._details(reference), "transaction")
        status = _text(transaction, "transactionStatus")
        if kind == "void" and status == VOIDED:
            return ReversalResult("void", reference, None)
        if kind == "capture" and status in CAPTURED:
            amount = _text(transaction, "settleAmount") or _text(transaction, "authAmount")
            return ReversalResult("capture", reference, reference, _cents(amount))
        return None

    def _settled(self, trans_id: str) -> Any:
        """The transaction's details, or NotRefundable while it has not settled: void it instead."""
        found = self._details(trans_id)
        status = _text(found, "transaction", "transactionStatus")
        if status != SETTLED:
            raise NotRefundable(
                "authorizenet refunds only settled payments; void this one instead",
                processor_code=status,
            )
        return found

    def _details(self, trans_id: str) -> Any:
        details = contracts.getTransactionDetailsRequest()
        details.transId = trans_id
        found = self._execute(apicontrollers.getTransactionDetailsController, details)
        code, text = _message(found)
        if code != "I00001":
            raise _api_error(code, text)
        return found

    def _accepted(
        self, response: Any, kind: ReversalKind, reference: str, amount_cents: int
    ) -> ReversalResult:
        result = _child(response, "transactionResponse")
        if _text(result, "responseCode") == "1":
            return ReversalResult(kind, reference, _text(result, "transId"), amount_cents)
        code, text = _message(response)
        error = _child(result, "errors", "error")
        raise GatewayConfigurationError(
            f"authorizenet refused the {kind}: {scrub(_text(error, 'errorText') or text)}",
            processor_code=_text(error, "errorCode") or code,
        )

    def _follow_up(
        self,
        kind: str,
        reference: str,
        idempotency_key: str,
        *,
        amount_cents: int | None = None,
        payment: Any = None,
    ) -> Any:
        """A transaction that refers to an earlier one (refTransId): void, refund or capture."""
        transaction = contracts.transactionRequestType()
        transaction.transactionType = kind
        if amount_cents is not None:
            transaction.amount = (Decimal(amount_cents) / 100).quantize(Decimal("0.01"))
        if payment is not None:
            transaction.payment = payment
        transaction.refTransId = reference
        order = contracts.orderType()
        order.invoiceNumber = short_reference(idempotency_key)  # how find_reversal finds it
        transaction.order = order
        api_request = contracts.createTransactionRequest()
        api_request.refId = short_reference(idempotency_key)
        api_request.transactionRequest = transaction
        return self._execute(apicontrollers.createTransactionController, api_request)

    def _transaction_details(self, look_up: LookUp, trans_id: str) -> PaymentResult:
        response = self._details(trans_id)
        transaction = _child(response, "transaction")
        response_code = _text(transaction, "responseCode")
        if response_code == "2":
            raise _decline(_text(transaction, "responseReasonCode"), None)
        if response_code not in ("1", "4"):
            raise GatewayOutcomeUnknown(
                "authorizenet transaction is in an unexpected state", processor_code=response_code
            )
        kind = _text(transaction, "transactionType")
        outcome: ResultKind = "authorized" if kind == "authOnlyTransaction" else "captured"
        return self._paid(
            look_up,
            outcome,
            trans_id,
            auth_code=_text(transaction, "authCode"),
            response_code=response_code,
            avs=_text(transaction, "AVSResponse"),
            cvv=_text(transaction, "cardCodeResponse"),
            network_trans_id=_text(transaction, "networkTransId"),
            capture_status=_text(transaction, "transactionStatus") or CAPTURE_STATUS[outcome],
        )

    def _transact(self, request: PaymentRequest, kind: str, outcome: ResultKind) -> PaymentResult:
        transaction = contracts.transactionRequestType()
        transaction.transactionType = kind
        transaction.amount = (Decimal(request.amount_cents) / 100).quantize(Decimal("0.01"))
        transaction.currencyCode = request.currency.upper()
        transaction.payment = _payment(request)
        order = contracts.orderType()
        order.invoiceNumber = short_reference(request.idempotency_key)
        if request.description:
            order.description = request.description[:255]
        transaction.order = order
        bill_to = _bill_to(request)
        if bill_to is not None:
            transaction.billTo = bill_to
        setting = contracts.settingType()
        setting.settingName = "duplicateWindow"
        setting.settingValue = str(DUPLICATE_WINDOW_SECONDS)
        transaction.transactionSettings = contracts.ArrayOfSetting()
        transaction.transactionSettings.setting.append(setting)
        api_request = contracts.createTransactionRequest()
        api_request.refId = short_reference(request.idempotency_key)
        api_request.transactionRequest = transaction

        response = self._execute(apicontrollers.createTransactionController, api_request)
        code, text = _message(response)
        result = _child(response, "transactionResponse")
        response_code = _text(result, "responseCode")
        if response_code in ("1", "4"):  # 4: held for review, yet authorized
            return self._paid(
                request.as_look_up(),
                outcome,
                _text(result, "transId"),
                auth_code=_text(result, "authCode"),
                response_code=response_code,
                avs=_text(result, "avsResultCode"),
                cvv=_text(result, "cvvResultCode"),
                cavv=_text(result, "cavvResultCode"),
                network_trans_id=_text(result, "networkTransId"),
                capture_status=CAPTURE_STATUS[outcome],
            )
        if response_code in ("2", "3"):
            error = _child(result, "errors", "error")
            reason_code = _text(error, "errorCode")
            if reason_code == DUPLICATE_TRANSACTION:
                raise GatewayOutcomeUnknown(
                    "authorizenet reports a duplicate of an earlier try", processor_code="11"
                )
            if response_code == "2" or reason_code in _REASONS:
                raise _decline(reason_code, _text(error, "errorText"))
            raise CardDeclined(
                "processing_error",
                scrub(_text(error, "errorText")) or "Authorize.net could not process the card.",
                processor_code=reason_code,
            )
        raise _api_error(code, text)

    def _execute(self, controller: type, api_request: Any) -> Any:
        """One SDK round trip under the lock; a None response becomes the matching error."""
        merchant = contracts.merchantAuthenticationType()
        merchant.name = self._login
        merchant.transactionKey = self._key
        api_request.merchantAuthentication = merchant
        with _SDK_LOCK, _TRANSPORT.call(self._timeout, unlocked=_SDK_LOCK):
            ctl = controller(api_request)
            ctl.setenvironment(self.endpoint)
            try:
                ctl.execute()
            except Exception as exc:  # the SDK re-parses unreadable bodies and lets lxml raise
                raise GatewayOutcomeUnknown("authorizenet sent an unreadable answer") from exc
            response = ctl.getresponse()
            status, error = _TRANSPORT.last_status, _TRANSPORT.last_error
        if response is not None:
            return response
        if error is not None:
            raise transport_error(error, "authorizenet")
        if status is not None and status >= 400:
            raise status_error(status, "authorizenet")
        raise GatewayOutcomeUnknown("authorizenet gave no answer")

    def _paid(
        self,
        look_up: LookUp,
        outcome: ResultKind,
        trans_id: str | None,
        *,
        auth_code: str | None,
        response_code: str | None,
        avs: str | None,
        cvv: str | None,
        cavv: str | None = None,
        network_trans_id: str | None = None,
        capture_status: str | None = None,
    ) -> PaymentResult:
        return PaymentResult(
            outcome,
            trans_id,
            look_up.card_brand,
            look_up.card_last4,
            processor_fields(
                "authorizenet",
                authnet_transaction_id=trans_id,
                authnet_auth_code=auth_code,
                authnet_response_code=response_code,
                authnet_avs_result_code=avs,
                authnet_cvv_result_code=cvv,
                authnet_cavv_result_code=cavv,
                authnet_network_trans_id=network_trans_id,
                authnet_capture_status=capture_status,
            ),
        )

    def _tokenized(
        self, look_up: LookUp, profile_id: str | None, payment_profile_id: str | None
    ) -> PaymentResult:
        return PaymentResult(
            "tokenized",
            None,
            look_up.card_brand,
            look_up.card_last4,
            processor_fields(
                "authorizenet",
                authnet_customer_profile_id=profile_id,
                authnet_payment_profile_id=payment_profile_id,
            ),
        )


def _payment(request: PaymentRequest) -> Any:
    card = contracts.creditCardType()
    card.cardNumber = request.card.number
    card.expirationDate = f"{request.card.exp_year:04d}-{request.card.exp_month:02d}"
    card.cardCode = request.card.cvc
    payment = contracts.paymentType()
    payment.creditCard = card
    return payment


def _bill_to(request: PaymentRequest) -> Any | None:
    """The AVS address: the merchant's billing address, with the ZIP the caller keyed on top."""
    if request.billing_address is None and not request.postal_code:
        return None
    bill_to = contracts.customerAddressType()
    if request.billing_address is not None:
        a = request.billing_address
        if a.first_name:
            bill_to.firstName = a.first_name
        if a.last_name:
            bill_to.lastName = a.last_name
        bill_to.address = a.street
        bill_to.city = a.city
        bill_to.state = a.state
        bill_to.country = a.country
    bill_to.zip = request.zip_code
    return bill_to


def _cents(amount: str | None) -> int:
    return int(Decimal(amount or "0") * 100)


def _message(response: Any) -> tuple[str | None, str | None]:
    message = _child(response, "messages", "message")
    return _text(message, "code"), _text(message, "text")


def _decline(reason_code: str | None, text: str | None) -> CardDeclined:
    return CardDeclined(
        _REASONS.get(reason_code or "", "card_declined"),
        scrub(text) or "The card was declined.",
        processor_code=reason_code,
    )


def _api_error(code: str | None, text: str | None) -> Exception:
    if code == "E00001":
        return GatewayUnavailable(f"authorizenet: {scrub(text)}", processor_code=code)
    if code in _CREDENTIAL_ERRORS:
        return GatewayConfigurationError(
            f"authorizenet rejected the credentials: {scrub(text)}", processor_code=code
        )
    return GatewayConfigurationError(
        f"authorizenet rejected the request: {scrub(text) or 'no reason given'}",
        processor_code=code,
    )
