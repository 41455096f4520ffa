"""The gateway port: request/result dataclasses, the PaymentGateway Protocol and its error tree.

    GatewayError(code, message, retryable, processor_code)
    ├── CardDeclined               the issuer or gateway said no; `reason` is normalized
    ├── GatewayUnavailable         nothing was charged (refused connection, 502/503): retry is safe
    ├── GatewayOutcomeUnknown      it may have been processed: reconcile, never retry blindly
    ├── GatewayConfigurationError  bad or missing credentials, or an operation the gateway lacks
    ├── NotVoidable                too late to void (settled or captured): refund it instead
    └── NotRefundable              too early to refund (not settled yet): void it instead

Messages never carry card data; adapters build them from gateway codes and texts only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Literal, Protocol

from pydantic import BaseModel

from gateways.cards import card_brand

DeclineReason = Literal[
    "card_declined",
    "insufficient_funds",
    "incorrect_cvc",
    "expired_card",
    "incorrect_zip",
    "invalid_number",
    "processing_error",
]
ResultKind = Literal["captured", "authorized", "tokenized"]
ReversalKind = Literal["void", "refund", "capture"]


class ProcessorCard(BaseModel):
    """What every gateway's `processor` object carries: the card that paid."""

    card_brand: str | None
    card_last4: str | None


class StripeProcessor(ProcessorCard):
    """Stripe's identifiers for the payment; null when not applicable."""

    stripe_payment_intent_id: str | None
    stripe_charge_id: str | None
    payment_method_id: str | None
    stripe_customer_id: str | None
    receipt_url: str | None


class AuthorizenetProcessor(ProcessorCard):
    """Authorize.net's identifiers and result codes; null when the gateway gave none."""

    authnet_transaction_id: str | None
    authnet_auth_code: str | None
    authnet_response_code: str | None
    authnet_avs_result_code: str | None
    authnet_cvv_result_code: str | None
    authnet_cavv_result_code: str | None
    authnet_network_trans_id: str | None
    authnet_capture_status: str | None
    authnet_customer_profile_id: str | None
    authnet_payment_profile_id: str | None


class BraintreeProcessor(ProcessorCard):
    """Braintree's identifiers for the payment; null when not applicable."""

    braintree_transaction_id: str | None
    braintree_customer_id: str | None
    braintree_payment_method_token: str | None


class Shift4Processor(ProcessorCard):
    """Shift4's identifiers for the payment; null when not applicable."""

    shift4_charge_id: str | None
    shift4_customer_id: str | None
    shift4_card_id: str | None


# The `processor` object per gateway (PRODUCT.md and Maven's session docs).
PROCESSOR_MODELS: dict[str, type[ProcessorCard]] = {
    "stripe": StripeProcessor,
    "authorizenet": AuthorizenetProcessor,
    "braintree": BraintreeProcessor,
    "shift4": Shift4Processor,
}
# What an adapter fills in; the card fields come from the session.
PROCESSOR_FIELDS: dict[str, tuple[str, ...]] = {
    gateway: tuple(name for name in model.model_fields if name not in ProcessorCard.model_fields)
    for gateway, model in PROCESSOR_MODELS.items()
}


def short_reference(idempotency_key: str, length: int = 20) -> str:
    """A stable id that fits gateway fields capped at 20 characters (refId, invoiceNumber)."""
    return "pd" + hashlib.sha256(idempotency_key.encode()).hexdigest()[: length - 2]


@dataclass(frozen=True)
class Card:
    """Card data as entered; every field is hidden from repr so it cannot reach a log."""

    number: str = field(repr=False)
    exp_month: int = field(repr=False)
    exp_year: int = field(repr=False)
    cvc: str = field(repr=False)

    @property
    def brand(self) -> str:
        return card_brand(self.number)

    @property
    def last4(self) -> str:
        return self.number[-4:]

    def __repr__(self) -> str:
        return f"Card(brand={self.brand!r}, last4={self.last4!r})"

    __str__ = __repr__


@dataclass(frozen=True)
class CardholderAddress:
    street: str
    city: str
    state: str
    zip: str
    country: str = "US"
    first_name: str | None = None
    last_name: str | None = None

    @property
    def full_name(self) -> str:
        """The cardholder's name as one string ("" when neither part is known)."""
        return " ".join(part for part in (self.first_name, self.last_name) if part)


@dataclass(frozen=True)
class LookUp:
    """How reconciliation names an attempt at the gateway once its card is gone: no card data.

    Adapters find the attempt by `idempotency_key`; brand and last four fill in the result.
    """

    idempotency_key: str
    amount_cents: int
    card_brand: str
    card_last4: str


@dataclass(frozen=True)
class PaymentRequest:
    amount_cents: int
    currency: str
    card: Card
    idempotency_key: str
    description: str | None = None
    billing_address: CardholderAddress | None = None
    postal_code: str | None = None
    session_id: str | None = None

    @property
    def zip_code(self) -> str | None:
        """The ZIP for AVS: what the caller keyed wins over the merchant-supplied address."""
        if self.postal_code:
            return self.postal_code
        return self.billing_address.zip if self.billing_address else None

    def as_look_up(self) -> LookUp:
        """This request as reconciliation will name it: the key and what may be kept of the card."""
        return LookUp(self.idempotency_key, self.amount_cents, self.card.brand, self.card.last4)


@dataclass(frozen=True)
class PaymentResult:
    outcome: ResultKind
    transaction_id: str | None
    card_brand: str
    card_last4: str
    processor: dict[str, str | None]


@dataclass(frozen=True)
class ReversalResult:
    """A void, refund or capture the gateway accepted; `amount_cents` is None for a void (all)."""

    kind: ReversalKind
    reference: str  # the transaction that was reversed (or captured)
    reversal_id: str | None  # the gateway's id for the refund (or void, or capture, if it has one)
    amount_cents: int | None = None


def processor_fields(gateway: str, **values: str | None) -> dict[str, str | None]:
    """PRODUCT.md's processor object for a gateway: every documented key, None when n/a."""
    fields = PROCESSOR_FIELDS[gateway]
    unknown = set(values) - set(fields)
    if unknown:
        raise ValueError(f"not {gateway} processor fields: {sorted(unknown)}")
    return {name: values.get(name) for name in fields}


class PaymentGateway(Protocol):
    name: str

    def charge(self, request: PaymentRequest) -> PaymentResult:
        """Authorize and capture in one step."""
        ...

    def authorize(self, request: PaymentRequest) -> PaymentResult:
        """Authorize only; the merchant captures later (`capture`) or releases it (`void`)."""
        ...

    def tokenize(self, request: PaymentRequest) -> PaymentResult:
        """Save the card at the gateway for later merchant-initiated charges."""
        ...

    def reconcile(self, look_up: LookUp) -> PaymentResult | None:
        """After an unknown outcome: the gateway's record of that attempt, or None if none."""
        ...

    def void(self, reference: str, *, idempotency_key: str) -> ReversalResult:
        """Cancel an authorization or an unsettled sale in full; NotVoidable once it settled."""
        ...

    def refund(self, reference: str, amount_cents: int, *, idempotency_key: str) -> ReversalResult:
        """Give back `amount_cents` of a captured payment; repeating the key refunds once.

        NotRefundable while the gateway only refunds settled payments and this one is not yet.
        """
        ...

    def capture(self, reference: str, amount_cents: int, *, idempotency_key: str) -> ReversalResult:
        """Capture `amount_cents` of an authorization (at most what was authorized)."""
        ...

    def check_refundable(self, reference: str) -> None:
        """Before a refund is accepted: NotRefundable if the gateway would refuse it for not being
        settled yet. Read-only; a gateway that refunds any captured payment asks nothing."""
        ...

    def find_reversal(
        self, kind: ReversalKind, reference: str, *, idempotency_key: str
    ) -> ReversalResult | None:
        """After an unknown outcome: the gateway's record of that void, refund or capture."""
        ...


class GatewayAdapter(PaymentGateway, Protocol):
    """What `GATEWAYS` holds: an adapter class that builds itself from stored credentials."""

    required_credentials: ClassVar[tuple[str, ...]]

    @classmethod
    def from_credentials(
        cls, credentials: Mapping[str, str], *, timeout: float, environment: str = "test"
    ) -> PaymentGateway: ...


class GatewayError(Exception):
    """Base of the tree; `code` is what the session's `error.code` shows."""

    code: str = "gateway_error"
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        retryable: bool | None = None,
        processor_code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if retryable is not None:
            self.retryable = retryable
        self.processor_code = processor_code

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class CardDeclined(GatewayError):
    """The card was refused; another card may work, so the caller gets another try."""

    def __init__(
        self, reason: DeclineReason, message: str, *, processor_code: str | None = None
    ) -> None:
        super().__init__(message, code=reason, processor_code=processor_code)
        self.reason: DeclineReason = reason


class GatewayUnavailable(GatewayError):
    code = "gateway_unavailable"
    retryable = True


class GatewayOutcomeUnknown(GatewayError):
    code = "gateway_outcome_unknown"


class GatewayConfigurationError(GatewayError):
    code = "gateway_configuration"


class NotVoidable(GatewayError):
    """The transaction is past the point where a void works (captured or settled)."""

    code = "not_voidable"


class NotRefundable(GatewayError):
    """The payment has not settled and this gateway refunds only settled payments."""

    code = "void_required"


def require(credentials: Mapping[str, str], *keys: str) -> tuple[str, ...]:
    """The named credential values, or a configuration error naming (only) the missing keys."""
    missing = [key for key in keys if not credentials.get(key)]
    if missing:
        raise GatewayConfigurationError(f"missing gateway credentials: {', '.join(missing)}")
    return tuple(credentials[key] for key in keys)
