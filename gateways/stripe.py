"""Stripe through its official SDK: a PaymentMethod, then a confirmed MOTO PaymentIntent."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any, ClassVar, TypeVar

import stripe

from gateways._http import quiet_debug_log, scrub, status_error, transport_error
from gateways.base import (
    CardDeclined,
    DeclineReason,
    GatewayConfigurationError,
    GatewayError,
    GatewayOutcomeUnknown,
    GatewayUnavailable,
    LookUp,
    NotVoidable,
    PaymentRequest,
    PaymentResult,
    ResultKind,
    ReversalKind,
    ReversalResult,
    processor_fields,
    require,
)

T = TypeVar("T")

# Stripe `code` / `decline_code` values -> our reasons; anything else is a plain decline.
_REASONS: dict[str, DeclineReason] = {
    "insufficient_funds": "insufficient_funds",
    "expired_card": "expired_card",
    "invalid_expiry_month": "expired_card",
    "invalid_expiry_year": "expired_card",
    "incorrect_cvc": "incorrect_cvc",
    "invalid_cvc": "incorrect_cvc",
    "incorrect_zip": "incorrect_zip",
    "incorrect_number": "invalid_number",
    "invalid_number": "invalid_number",
    "processing_error": "processing_error",
}
METADATA_KEY = "paydial_idempotency_key"
# https://docs.stripe.com/error-codes#payment-intent-unexpected-state
UNEXPECTED_STATE = "payment_intent_unexpected_state"


def _decline(code: str | None, decline_code: str | None, message: str | None) -> CardDeclined:
    reason = _REASONS.get(decline_code or "") or _REASONS.get(code or "") or "card_declined"
    return CardDeclined(
        reason, scrub(message) or "The card was declined.", processor_code=decline_code or code
    )


@lru_cache(maxsize=256)
def _client(secret_key: str, api_base: str, timeout: float) -> stripe.StripeClient:
    """The one client for a credential set, so every payment with it reuses its kept-alive
    connections (the SDK's RequestsClient keeps one `requests` session per thread) instead of a
    new session, connection and TLS handshake per payment."""
    return stripe.StripeClient(
        secret_key,
        base_addresses={"api": api_base},
        max_network_retries=0,
        http_client=stripe.RequestsClient(timeout=timeout),
    )


class StripeGateway:
    """One StripeClient per merchant credential set; the client is thread-safe, so is this."""

    name = "stripe"
    required_credentials: ClassVar[tuple[str, ...]] = ("secret_key",)

    def __init__(self, *, client: stripe.StripeClient) -> None:
        self._client = client

    def __repr__(self) -> str:
        return "StripeGateway()"

    @classmethod
    def from_credentials(
        cls, credentials: Mapping[str, str], *, timeout: float, environment: str = "test"
    ) -> StripeGateway:
        (secret_key,) = require(credentials, *cls.required_credentials)
        quiet_debug_log("stripe")  # its DEBUG "Post details" line carries the card fields
        api_base = credentials.get("api_base") or stripe.DEFAULT_API_BASE
        return cls(client=_client(secret_key, api_base, timeout))

    def charge(self, request: PaymentRequest) -> PaymentResult:
        return self._pay(request, capture_method="automatic")

    def authorize(self, request: PaymentRequest) -> PaymentResult:
        """A manual-capture intent: it stops at `requires_capture` until `capture` (or `void`).

        https://docs.stripe.com/payments/place-a-hold-on-a-payment-method
        """
        return self._pay(request, capture_method="manual")

    def _pay(self, request: PaymentRequest, *, capture_method: str) -> PaymentResult:
        pm = self._call(lambda: self._create_payment_method(request), money_at_stake=False)
        params: dict[str, Any] = {
            "amount": request.amount_cents,
            "currency": request.currency.lower(),
            "payment_method": pm.id,
            "payment_method_types": ["card"],
            "payment_method_options": {"card": {"moto": True}},
            "confirm": True,
            "capture_method": capture_method,
            "metadata": self._metadata(request),
            "expand": ["latest_charge"],
        }
        if request.description:
            params["description"] = request.description
        intent = self._call(
            lambda: self._client.v1.payment_intents.create(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": request.idempotency_key},
            ),
            money_at_stake=True,
        )
        return self._intent_result(request.as_look_up(), intent)

    def tokenize(self, request: PaymentRequest) -> PaymentResult:
        pm = self._call(lambda: self._create_payment_method(request), money_at_stake=False)
        params: dict[str, Any] = {"metadata": self._metadata(request)}
        if request.description:
            params["description"] = request.description
        customer = self._call(
            lambda: self._client.v1.customers.create(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": f"{request.idempotency_key}:customer"},
            ),
            money_at_stake=False,
        )
        self._call(
            lambda: self._client.v1.payment_methods.attach(
                pm.id,
                params={"customer": customer.id},
                options={"idempotency_key": f"{request.idempotency_key}:attach"},
            ),
            money_at_stake=False,
        )
        return self._tokenized(request.as_look_up(), customer.id, pm.id)

    def reconcile(self, look_up: LookUp) -> PaymentResult | None:
        """Find our intent or customer by the key in its metadata, however many came since."""
        key = look_up.idempotency_key
        intent = self._find_tagged(self._client.v1.payment_intents, key, expand=True)
        if intent is not None:
            return self._intent_result(look_up, intent)
        customer = self._find_tagged(self._client.v1.customers, key, expand=False)
        if customer is None:
            return None
        params: Any = {"customer": customer.id, "type": "card"}
        cards: Any = self._call(
            lambda: self._client.v1.payment_methods.list(params=params), money_at_stake=True
        )
        if not cards.data:  # the attach (the card check) never completed
            return None
        return self._tokenized(look_up, customer.id, cards.data[0].id)

    def _find_tagged(self, service: Any, key: str, *, expand: bool) -> Any | None:
        """Search by metadata; where search misses (its index lags up to a minute, and some
        accounts and emulators lack it) page through the whole list, newest first.

        https://docs.stripe.com/search#data-freshness, https://docs.stripe.com/api/pagination
        """
        query: Any = {"query": f"metadata['{METADATA_KEY}']:'{key}'"}
        listing: Any = {"limit": 100}
        if expand:
            query["expand"] = listing["expand"] = ["data.latest_charge"]
        try:
            found: Any = service.search(params=query)
            match = next((obj for obj in found.data if _tagged(obj, key)), None)
            if match is not None:
                return match
        except stripe.InvalidRequestError:  # no search here: the list below still finds it
            pass
        except stripe.StripeError as exc:
            raise _translate(exc) from None
        pages: Any = self._call(lambda: service.list(params=listing), money_at_stake=True)
        try:
            return next((obj for obj in pages.auto_paging_iter() if _tagged(obj, key)), None)
        except stripe.StripeError as exc:
            raise _translate(exc) from None

    def void(self, reference: str, *, idempotency_key: str) -> ReversalResult:
        """Cancel the PaymentIntent; Stripe refuses once it succeeded (captured): refund then."""
        try:
            self._client.v1.payment_intents.cancel(
                reference, options={"idempotency_key": idempotency_key}
            )
        except stripe.InvalidRequestError as exc:
            if exc.code == UNEXPECTED_STATE:
                raise NotVoidable("stripe cannot cancel a captured payment intent") from None
            raise _translate(exc) from None
        except stripe.StripeError as exc:
            raise _translate(exc) from None
        return ReversalResult("void", reference, None)

    def check_refundable(self, reference: str) -> None:
        """Stripe refunds a payment as soon as it is captured: nothing to ask."""

    def refund(self, reference: str, amount_cents: int, *, idempotency_key: str) -> ReversalResult:
        params: Any = {
            "payment_intent": reference,
            "amount": amount_cents,
            "metadata": {METADATA_KEY: idempotency_key},
        }
        refund = self._call(
            lambda: self._client.v1.refunds.create(
                params=params, options={"idempotency_key": idempotency_key}
            ),
            money_at_stake=True,
        )
        return ReversalResult("refund", reference, refund.id, amount_cents)

    def capture(self, reference: str, amount_cents: int, *, idempotency_key: str) -> ReversalResult:
        """Capture a `requires_capture` intent (https://docs.stripe.com/api/payment_intents/capture)."""
        params: Any = {"amount_to_capture": amount_cents}
        intent = self._call(
            lambda: self._client.v1.payment_intents.capture(
                reference, params=params, options={"idempotency_key": idempotency_key}
            ),
            money_at_stake=True,
        )
        return ReversalResult("capture", reference, _id(intent.latest_charge), amount_cents)

    def find_reversal(
        self, kind: ReversalKind, reference: str, *, idempotency_key: str
    ) -> ReversalResult | None:
        """A refund by the key in its metadata; a capture or void by the intent's status."""
        if kind == "refund":
            params: Any = {"payment_intent": reference, "limit": 100}
            refunds: Any = self._call(
                lambda: self._client.v1.refunds.list(params=params), money_at_stake=True
            )
            try:
                found = next(
                    (r for r in refunds.auto_paging_iter() if _tagged(r, idempotency_key)), None
                )
            except stripe.StripeError as exc:
                raise _translate(exc) from None
            return (
                None if found is None else ReversalResult(kind, reference, found.id, found.amount)
            )
        intent: Any = self._call(
            lambda: self._client.v1.payment_intents.retrieve(reference), money_at_stake=True
        )
        if kind == "void" and intent.status == "canceled":
            return ReversalResult("void", reference, None)
        if kind == "capture" and intent.status == "succeeded":
            charge = _id(getattr(intent, "latest_charge", None))
            # amount_received is what was captured (localstripe leaves it out: then all of it)
            captured = getattr(intent, "amount_received", None) or intent.amount
            return ReversalResult("capture", reference, charge, captured)
        return None

    def _create_payment_method(self, request: PaymentRequest) -> stripe.PaymentMethod:
        card = request.card
        params: dict[str, Any] = {
            "type": "card",
            "card": {
                "number": card.number,
                "exp_month": card.exp_month,
                "exp_year": card.exp_year,
                "cvc": card.cvc,
            },
        }
        billing = _billing_details(request)
        if billing:
            params["billing_details"] = billing
        return self._client.v1.payment_methods.create(
            params=params,  # type: ignore[arg-type]
            options={"idempotency_key": f"{request.idempotency_key}:pm"},
        )

    def _metadata(self, request: PaymentRequest) -> dict[str, str]:
        metadata = {METADATA_KEY: request.idempotency_key}
        if request.session_id:
            metadata["paydial_session_id"] = request.session_id
        return metadata

    def _intent_result(self, look_up: LookUp, intent: Any) -> PaymentResult:
        charge = getattr(intent, "latest_charge", None)
        receipt = None if isinstance(charge, str) else getattr(charge, "receipt_url", None)
        status = getattr(intent, "status", None)
        outcomes: dict[str | None, ResultKind] = {
            "succeeded": "captured",
            "requires_capture": "authorized",
        }
        if status in outcomes:
            return PaymentResult(
                outcomes[status],
                intent.id,
                look_up.card_brand,
                look_up.card_last4,
                processor_fields(
                    "stripe",
                    stripe_payment_intent_id=intent.id,
                    stripe_charge_id=_id(charge),
                    payment_method_id=_id(getattr(intent, "payment_method", None)),
                    receipt_url=receipt,
                ),
            )
        error = getattr(intent, "last_payment_error", None)
        if status == "requires_payment_method" and error:
            raise _decline(
                getattr(error, "code", None),
                getattr(error, "decline_code", None),
                getattr(error, "message", None),
            )
        raise GatewayOutcomeUnknown(f"stripe payment intent is {status!r}", processor_code=status)

    def _tokenized(self, look_up: LookUp, customer_id: str, pm_id: str) -> PaymentResult:
        return PaymentResult(
            "tokenized",
            None,
            look_up.card_brand,
            look_up.card_last4,
            processor_fields("stripe", payment_method_id=pm_id, stripe_customer_id=customer_id),
        )

    def _call(self, fn: Callable[[], T], *, money_at_stake: bool) -> T:
        """Run one SDK call and translate whatever it raises into the error tree."""
        try:
            return fn()
        except stripe.StripeError as exc:
            error = _translate(exc)
        if isinstance(error, GatewayOutcomeUnknown) and not money_at_stake:
            # A PaymentMethod or Customer on its own moves no money: safe to start over.
            error = GatewayUnavailable(error.message, processor_code=error.processor_code)
        raise error


def _tagged(obj: Any, idempotency_key: str) -> bool:
    """Whether a listed object carries our idempotency key in its metadata."""
    metadata = getattr(obj, "metadata", None)
    try:
        return metadata is not None and metadata[METADATA_KEY] == idempotency_key
    except KeyError:
        return False


def _id(value: Any) -> str | None:
    """An id from a field that is either the id itself or the expanded object."""
    return value if isinstance(value, str) or value is None else getattr(value, "id", None)


def _billing_details(request: PaymentRequest) -> dict[str, Any]:
    address: dict[str, str] = {}
    details: dict[str, Any] = {}
    if request.billing_address:
        a = request.billing_address
        address = {
            "line1": a.street,
            "city": a.city,
            "state": a.state,
            "postal_code": a.zip,
            "country": a.country,
        }
        name = a.full_name
        if name:
            details["name"] = name
    if request.postal_code:
        address["postal_code"] = request.postal_code
    if address:
        details["address"] = address
    return details


def _translate(exc: stripe.StripeError) -> GatewayError:
    code = getattr(exc, "code", None)
    if isinstance(exc, stripe.CardError):
        decline_code = exc.error.decline_code if exc.error else None
        return _decline(code, decline_code, exc.user_message)
    if isinstance(exc, stripe.AuthenticationError | stripe.PermissionError):
        return GatewayConfigurationError("stripe rejected the API key", processor_code=code)
    if isinstance(exc, stripe.APIConnectionError):
        return transport_error(exc.__cause__ or exc, "stripe")
    if isinstance(exc, stripe.IdempotencyError):
        return GatewayOutcomeUnknown(
            "stripe saw this idempotency key with another request", processor_code=code
        )
    if isinstance(exc, stripe.InvalidRequestError) and (exc.http_status or 0) < 500:
        return GatewayConfigurationError(
            f"stripe rejected the request: {scrub(exc.user_message)}", processor_code=code
        )
    if exc.http_status:
        return status_error(exc.http_status, "stripe", processor_code=code)
    return GatewayOutcomeUnknown("stripe returned an unreadable answer", processor_code=code)
