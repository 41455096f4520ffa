"""Braintree through its official SDK: `transaction.sale` settled sales, vaulted customers."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit

import braintree
from braintree.exceptions import http as http_errors
from braintree.exceptions.braintree_error import BraintreeError

from gateways._http import scrub, status_error, transport_error
from gateways.base import (
    CardDeclined,
    DeclineReason,
    GatewayConfigurationError,
    GatewayError,
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

T = TypeVar("T")

# Processor response codes with a sharper meaning than "declined".
_PROCESSOR_REASONS: dict[str, DeclineReason] = {
    "2001": "insufficient_funds",
    "2002": "insufficient_funds",
    "2004": "expired_card",
    "2005": "invalid_number",
    "2006": "expired_card",
    "2008": "invalid_number",
    "2010": "incorrect_cvc",
    "2060": "incorrect_zip",
}
_REJECTION_REASONS: dict[str, DeclineReason] = {
    "cvv": "incorrect_cvc",
    "avs": "incorrect_zip",
    "avs_and_cvv": "incorrect_zip",
    "token_issuance": "processing_error",
}
# Validation error codes on the card itself -> our reasons; other validation errors are ours.
_VALIDATION_REASONS: dict[str, DeclineReason] = {
    **dict.fromkeys(("81714", "81715", "81716", "81717"), "invalid_number"),
    **dict.fromkeys(("81709", "81710", "81711", "81712", "81713"), "expired_card"),
    **dict.fromkeys(("81706", "81707", "81736"), "incorrect_cvc"),
}
CUSTOMER_ID_TAKEN = "91609"
# "Transaction can only be voided if status is authorized, submitted_for_settlement, or
# settlement_pending" (developer.paypal.com/braintree/docs/reference/general/validation-errors)
CANNOT_VOID = "91504"
CANNOT_REFUND_UNSETTLED = "91506"  # "Cannot refund a transaction unless it is settled."
_REFUNDABLE = {"settling", "settled"}
UNSETTLED = "braintree refunds only settled transactions; void it"
_CAPTURED = {"submitted_for_settlement", "settling", "settled", "settlement_pending"}
_PAID = {"authorized", "submitted_for_settlement", "settling", "settled", "settlement_pending"}
_UNEXPECTED_STATUS = re.compile(r"HTTP_RESPONSE (\d{3})")


def _processor_decline(code: str | None, text: str | None) -> CardDeclined:
    reason: DeclineReason = _PROCESSOR_REASONS.get(code or "", "card_declined")
    if code and code.isdigit() and int(code) >= 3000:
        reason = "processing_error"
    return CardDeclined(reason, scrub(text) or "The card was declined.", processor_code=code)


def _declined(status: str | None, subject: Any, message: str | None) -> GatewayError:
    """A transaction or verification that did not go through, as the error it means."""
    if status == "processor_declined":
        return _processor_decline(
            getattr(subject, "processor_response_code", None),
            getattr(subject, "processor_response_text", None) or message,
        )
    if status == "gateway_rejected":
        reason = getattr(subject, "gateway_rejection_reason", None)
        if reason == "duplicate":
            return GatewayOutcomeUnknown("braintree rejected a duplicate of an earlier try")
        return CardDeclined(
            _REJECTION_REASONS.get(reason or "", "card_declined"),
            scrub(message) or "The card was declined.",
            processor_code=reason,
        )
    if status == "failed":
        return CardDeclined("processing_error", scrub(message) or "Processing failed.")
    return CardDeclined("card_declined", scrub(message) or "The card was declined.")


class BraintreeGateway:
    """One SDK gateway per merchant; the SDK keeps a session per thread, so this is thread-safe."""

    name = "braintree"
    required_credentials: ClassVar[tuple[str, ...]] = ("merchant_id", "public_key", "private_key")

    def __init__(
        self, *, gateway: braintree.BraintreeGateway, merchant_account_id: str | None = None
    ):
        self._gateway = gateway
        self._merchant_account_id = merchant_account_id

    def __repr__(self) -> str:
        return "BraintreeGateway()"

    @classmethod
    def from_credentials(
        cls, credentials: Mapping[str, str], *, timeout: float, environment: str = "test"
    ) -> BraintreeGateway:
        merchant_id, public_key, private_key = require(credentials, *cls.required_credentials)
        config = braintree.Configuration(
            environment=_environment(credentials, environment),
            merchant_id=merchant_id,
            public_key=public_key,
            private_key=private_key,
            timeout=timeout,
            wrap_http_exceptions=True,
        )
        return cls(
            gateway=braintree.BraintreeGateway(config),
            merchant_account_id=credentials.get("merchant_account_id"),
        )

    def charge(self, request: PaymentRequest) -> PaymentResult:
        return self._sale(request, settle=True)

    def authorize(self, request: PaymentRequest) -> PaymentResult:
        """A sale left `authorized`: `capture` submits it for settlement, `void` releases it."""
        return self._sale(request, settle=False)

    def _sale(self, request: PaymentRequest, *, settle: bool) -> PaymentResult:
        params: dict[str, Any] = {
            "amount": f"{request.amount_cents / 100:.2f}",
            "order_id": request.idempotency_key,
            "transaction_source": "moto",
            "credit_card": self._card(request),
            "options": {"submit_for_settlement": settle},
        }
        billing = _billing(request)
        if billing:
            params["billing"] = billing
        if self._merchant_account_id:
            params["merchant_account_id"] = self._merchant_account_id
        result = self._call(lambda: self._gateway.transaction.sale(params), money_at_stake=True)
        if result.is_success:
            return self._captured(request.as_look_up(), result.transaction)
        if result.transaction is not None:
            raise _declined(result.transaction.status, result.transaction, result.message)
        raise self._validation_error(result)

    def tokenize(self, request: PaymentRequest) -> PaymentResult:
        card = self._card(request)
        card["options"] = {"verify_card": True}
        billing = _billing(request)
        if billing:
            card["billing_address"] = billing
        params = {"id": short_reference(request.idempotency_key, 36), "credit_card": card}
        result = self._call(lambda: self._gateway.customer.create(params), money_at_stake=True)
        if result.is_success:
            return self._tokenized(request.as_look_up(), result.customer)
        verification = result.credit_card_verification
        if verification is not None:
            raise _declined(verification.status, verification, result.message)
        if any(e.code == CUSTOMER_ID_TAKEN for e in result.errors.deep_errors):
            raise GatewayOutcomeUnknown("braintree already holds a customer for this attempt")
        raise self._validation_error(result)

    def reconcile(self, look_up: LookUp) -> PaymentResult | None:
        """Search our order id among transactions, then our customer id in the vault."""
        found = self._call(
            lambda: list(
                self._gateway.transaction.search(
                    braintree.TransactionSearch.order_id == look_up.idempotency_key
                ).items
            ),
            money_at_stake=True,
        )
        for transaction in found:
            if transaction.status in _PAID:
                return self._captured(look_up, transaction)
        if found:
            raise _declined(found[0].status, found[0], None)
        customer_id = short_reference(look_up.idempotency_key, 36)
        try:
            customer = self._gateway.customer.find(customer_id)
        except braintree.exceptions.NotFoundError:
            return None
        except Exception as exc:
            raise _translate(exc) from exc
        return self._tokenized(look_up, customer) if customer.credit_cards else None

    def void(self, reference: str, *, idempotency_key: str) -> ReversalResult:
        """Void before settlement; error 91504 says it is too late, so refund instead."""
        params = {"api_request_key": idempotency_key}
        result = self._call(
            lambda: self._gateway.transaction.void(reference, params), money_at_stake=True
        )
        if result.is_success:
            return ReversalResult("void", reference, None)
        if any(e.code == CANNOT_VOID for e in result.errors.deep_errors):
            raise NotVoidable("braintree can no longer void this transaction; refund it")
        raise self._validation_error(result)

    def check_refundable(self, reference: str) -> None:
        """transaction.find: Braintree refunds a sale once it is settling or settled (91506)."""
        sale = self._call(lambda: self._gateway.transaction.find(reference), money_at_stake=False)
        if sale.status not in _REFUNDABLE:
            raise NotRefundable(UNSETTLED, processor_code=sale.status)

    def refund(self, reference: str, amount_cents: int, *, idempotency_key: str) -> ReversalResult:
        """The refund carries our key as its order id, which is how `find_reversal` finds it."""
        params = {
            "amount": f"{amount_cents / 100:.2f}",
            "order_id": idempotency_key,
            "api_request_key": idempotency_key,
        }
        result = self._call(
            lambda: self._gateway.transaction.refund(reference, params), money_at_stake=True
        )
        if not result.is_success:
            if any(e.code == CANNOT_REFUND_UNSETTLED for e in result.errors.deep_errors):
                raise NotRefundable(UNSETTLED)
            raise self._validation_error(result)
        return ReversalResult("refund", reference, result.transaction.id, amount_cents)

    def capture(self, reference: str, amount_cents: int, *, idempotency_key: str) -> ReversalResult:
        """submit_for_settlement of an authorized sale, for at most its amount."""
        amount = f"{amount_cents / 100:.2f}"
        result = self._call(
            lambda: self._gateway.transaction.submit_for_settlement(reference, amount),
            money_at_stake=True,
        )
        if not result.is_success:
            raise self._validation_error(result)
        return ReversalResult("capture", reference, reference, amount_cents)

    def find_reversal(
        self, kind: ReversalKind, reference: str, *, idempotency_key: str
    ) -> ReversalResult | None:
        """A refund by its order id; a capture or a void by the status of the sale."""
        if kind == "refund":
            found = self._call(
                lambda: list(
                    self._gateway.transaction.search(
                        braintree.TransactionSearch.order_id == idempotency_key
                    ).items
                ),
                money_at_stake=True,
            )
            credit = next((t for t in found if t.type == "credit"), None)
            if credit is None:
                return None
            return ReversalResult("refund", reference, credit.id, _cents(credit.amount))
        sale = self._call(lambda: self._gateway.transaction.find(reference), money_at_stake=True)
        if kind == "void" and sale.status == "voided":
            return ReversalResult("void", reference, None)
        if kind == "capture" and sale.status in _CAPTURED:
            return ReversalResult("capture", reference, reference, _cents(sale.amount))
        return None

    def _card(self, request: PaymentRequest) -> dict[str, Any]:
        card = request.card
        return {
            "number": card.number,
            "expiration_month": f"{card.exp_month:02d}",
            "expiration_year": f"{card.exp_year:04d}",
            "cvv": card.cvc,
        }

    def _captured(self, look_up: LookUp, transaction: Any) -> PaymentResult:
        outcome: ResultKind = "authorized" if transaction.status == "authorized" else "captured"
        return PaymentResult(
            outcome,
            transaction.id,
            look_up.card_brand,
            look_up.card_last4,
            processor_fields("braintree", braintree_transaction_id=transaction.id),
        )

    def _tokenized(self, look_up: LookUp, customer: Any) -> PaymentResult:
        cards = customer.credit_cards or []
        return PaymentResult(
            "tokenized",
            None,
            look_up.card_brand,
            look_up.card_last4,
            processor_fields(
                "braintree",
                braintree_customer_id=customer.id,
                braintree_payment_method_token=cards[0].token if cards else None,
            ),
        )

    def _validation_error(self, result: Any) -> GatewayError:
        for error in result.errors.deep_errors:
            if error.code in _VALIDATION_REASONS:
                return CardDeclined(
                    _VALIDATION_REASONS[error.code],
                    scrub(error.message),
                    processor_code=error.code,
                )
        codes = ",".join(e.code for e in result.errors.deep_errors) or None
        return GatewayConfigurationError(
            f"braintree rejected the request: {scrub(result.message)}", processor_code=codes
        )

    def _call(self, fn: Callable[[], T], *, money_at_stake: bool) -> T:
        """Run one SDK call and translate whatever it raises into the error tree."""
        try:
            return fn()
        except Exception as exc:
            error = _translate(exc)
        if isinstance(error, GatewayOutcomeUnknown) and not money_at_stake:
            error = GatewayUnavailable(error.message)
        raise error


def _translate(exc: Exception) -> GatewayError:
    errors = braintree.exceptions
    if isinstance(exc, http_errors.ConnectionError | http_errors.TimeoutError):
        cause = exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else exc
        return transport_error(cause, "braintree")
    if isinstance(
        exc,
        errors.AuthenticationError
        | errors.AuthorizationError
        | errors.UpgradeRequiredError
        | errors.ConfigurationError
        | errors.NotFoundError,
    ):
        return GatewayConfigurationError(
            f"braintree refused the merchant credentials ({type(exc).__name__})"
        )
    if isinstance(exc, errors.TooManyRequestsError | errors.ServiceUnavailableError):
        return GatewayUnavailable(f"braintree is unavailable ({type(exc).__name__})")
    if isinstance(exc, errors.UnexpectedError):
        match = _UNEXPECTED_STATUS.search(str(exc))
        if match:
            return status_error(int(match.group(1)), "braintree")
    if isinstance(exc, BraintreeError):
        return GatewayOutcomeUnknown(
            f"braintree failed after the request was sent ({type(exc).__name__})"
        )
    return GatewayOutcomeUnknown(f"braintree sent an unreadable answer ({type(exc).__name__})")


def _cents(amount: Any) -> int:
    """The SDK's Decimal dollars as integer cents."""
    return int(Decimal(str(amount)) * 100)


def _environment(credentials: Mapping[str, str], environment: str) -> braintree.Environment:
    """`api_base` (a self-hosted proxy or emulator) wins over the named sandbox/production."""
    api_base = credentials.get("api_base")
    if api_base:
        url = urlsplit(api_base)
        if not url.hostname:
            raise GatewayConfigurationError(
                "braintree api_base must be a URL like http://host:port"
            )
        port = str(url.port or (443 if url.scheme == "https" else 80))
        return braintree.Environment("custom", url.hostname, port, api_base, False, None)
    name = credentials.get("environment") or ("production" if environment == "live" else "sandbox")
    try:
        return braintree.Environment.All[name]
    except KeyError:
        raise GatewayConfigurationError("braintree environment: sandbox or production") from None


def _billing(request: PaymentRequest) -> dict[str, str]:
    billing: dict[str, str] = {}
    if request.billing_address is not None:
        a = request.billing_address
        billing = {
            "street_address": a.street,
            "locality": a.city,
            "region": a.state,
            "postal_code": a.zip,
            "country_code_alpha2": a.country,
        }
        if a.first_name:
            billing["first_name"] = a.first_name
        if a.last_name:
            billing["last_name"] = a.last_name
    if request.postal_code:
        billing["postal_code"] = request.postal_code
    return billing
