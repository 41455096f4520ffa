"""The test-mode gateway: answers per PRODUCT.md's test cards, shaped like the gateway it mimics."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from typing import ClassVar

from gateways.base import (
    PROCESSOR_FIELDS,
    CardDeclined,
    DeclineReason,
    GatewayConfigurationError,
    GatewayError,
    LookUp,
    NotVoidable,
    PaymentRequest,
    PaymentResult,
    ResultKind,
    ReversalKind,
    ReversalResult,
    processor_fields,
)
from gateways.cards import luhn_valid

DECLINING_CARDS: dict[str, tuple[DeclineReason, str]] = {
    "4000000000000002": ("card_declined", "The card was declined."),
    "4000000000009995": ("insufficient_funds", "The card has insufficient funds."),
    "4000000000000127": ("incorrect_cvc", "The security code is incorrect."),
    "4000000000000069": ("expired_card", "The card has expired."),
    "4000000000000119": ("processing_error", "An error occurred while processing the card."),
}


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def _digits(hexdigest: str, n: int) -> str:
    return str(int(hexdigest, 16) % 10**n).zfill(n)


def _stripe(
    outcome: ResultKind, h: str, _request: PaymentRequest
) -> tuple[str | None, dict[str, str | None]]:
    if outcome == "tokenized":
        return None, processor_fields(
            "stripe", payment_method_id=f"pm_sim{h[:20]}", stripe_customer_id=f"cus_sim{h[20:34]}"
        )
    pi = f"pi_sim{h[:20]}"
    return pi, processor_fields(
        "stripe",
        stripe_payment_intent_id=pi,
        stripe_charge_id=f"ch_sim{h[20:40]}",
        payment_method_id=f"pm_sim{h[40:60]}",
    )


def avs_result(request: PaymentRequest) -> str:
    """The AVS answer for a test card: `Y` street and ZIP match, `Z` only a ZIP was given (and
    matches), `U` address information unavailable: no billing address and no ZIP entered.

    Codes as Authorize.net's `avsResultCode` (https://developer.authorize.net/api/reference/responseCodes.html).
    """
    if request.billing_address is not None:
        return "Y"
    return "Z" if request.postal_code else "U"


def _authorizenet(
    outcome: ResultKind, h: str, request: PaymentRequest
) -> tuple[str | None, dict[str, str | None]]:
    if outcome == "tokenized":
        return None, processor_fields(
            "authorizenet",
            authnet_customer_profile_id=_digits(h[:16], 10),
            authnet_payment_profile_id=_digits(h[16:32], 10),
        )
    txn = _digits(h[:16], 11)
    return txn, processor_fields(
        "authorizenet",
        authnet_transaction_id=txn,
        authnet_auth_code=h[16:22].upper(),
        authnet_response_code="1",
        authnet_avs_result_code=avs_result(request),
        authnet_cvv_result_code="M",
    )


def _braintree(
    outcome: ResultKind, h: str, _request: PaymentRequest
) -> tuple[str | None, dict[str, str | None]]:
    if outcome == "tokenized":
        return None, processor_fields(
            "braintree", braintree_customer_id=h[:9], braintree_payment_method_token=h[9:16]
        )
    return h[:8], processor_fields("braintree", braintree_transaction_id=h[:8])


def _shift4(
    outcome: ResultKind, h: str, _request: PaymentRequest
) -> tuple[str | None, dict[str, str | None]]:
    if outcome == "tokenized":
        return None, processor_fields(
            "shift4", shift4_customer_id=f"cust_sim{h[:16]}", shift4_card_id=f"card_sim{h[16:32]}"
        )
    charge = f"char_sim{h[:16]}"
    return charge, processor_fields("shift4", shift4_charge_id=charge)


_SHAPES: dict[
    str, Callable[[ResultKind, str, PaymentRequest], tuple[str | None, dict[str, str | None]]]
] = {
    "stripe": _stripe,
    "authorizenet": _authorizenet,
    "braintree": _braintree,
    "shift4": _shift4,
}


class SimulatorGateway:
    """Deterministic and idempotent like a real gateway: one key, one answer."""

    # What each (gateway, key) answered, so reconcile can tell "went through" from "never sent".
    _answers: ClassVar[dict[tuple[str, str], PaymentResult | GatewayError]] = {}
    # Voids, refunds and captures by (gateway, idempotency key): a repeated key gets the first.
    reversals: ClassVar[dict[tuple[str, str], ReversalResult]] = {}
    # Authorizations not yet captured or voided, by (gateway, transaction id).
    _held: ClassVar[set[tuple[str, str]]] = set()
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, name: str) -> None:
        if name not in PROCESSOR_FIELDS:
            raise GatewayConfigurationError(f"unknown gateway {name!r}")
        self.name = name

    def __repr__(self) -> str:
        return f"SimulatorGateway({self.name!r})"

    def charge(self, request: PaymentRequest) -> PaymentResult:
        return self._answer(request, "captured")

    def authorize(self, request: PaymentRequest) -> PaymentResult:
        result = self._answer(request, "authorized")
        if result.transaction_id:
            with self._lock:
                self._held.add((self.name, result.transaction_id))
        return result

    def tokenize(self, request: PaymentRequest) -> PaymentResult:
        return self._answer(request, "tokenized")

    def reconcile(self, look_up: LookUp) -> PaymentResult | None:
        with self._lock:
            answer = self._answers.get((self.name, look_up.idempotency_key))
        if isinstance(answer, GatewayError):
            raise answer
        return answer

    def void(self, reference: str, *, idempotency_key: str) -> ReversalResult:
        held = (self.name, reference) in self._held
        if self.name in ("stripe", "shift4") and not held:  # they void only authorizations
            raise NotVoidable(f"{self.name} cannot void a captured payment; refund it")
        with self._lock:
            self._held.discard((self.name, reference))
        return self._reverse(idempotency_key, ReversalResult("void", reference, None))

    def capture(self, reference: str, amount_cents: int, *, idempotency_key: str) -> ReversalResult:
        with self._lock:
            done = self.reversals.get((self.name, idempotency_key))
            if done is None and (self.name, reference) not in self._held:
                raise GatewayConfigurationError(f"{self.name}: not an open authorization")
            self._held.discard((self.name, reference))
        return self._reverse(
            idempotency_key, ReversalResult("capture", reference, reference, amount_cents)
        )

    def find_reversal(
        self, kind: ReversalKind, reference: str, *, idempotency_key: str
    ) -> ReversalResult | None:
        with self._lock:
            found = self.reversals.get((self.name, idempotency_key))
        return found if found is not None and found.kind == kind else None

    def check_refundable(self, reference: str) -> None:
        """The simulator refunds any payment: nothing to ask."""

    def refund(self, reference: str, amount_cents: int, *, idempotency_key: str) -> ReversalResult:
        refund_id = "re_sim" + _digest(self.name, idempotency_key)[:20]
        return self._reverse(
            idempotency_key, ReversalResult("refund", reference, refund_id, amount_cents)
        )

    def _reverse(self, idempotency_key: str, reversal: ReversalResult) -> ReversalResult:
        with self._lock:
            return self.reversals.setdefault((self.name, idempotency_key), reversal)

    def _answer(self, request: PaymentRequest, outcome: ResultKind) -> PaymentResult:
        key = (self.name, request.idempotency_key)
        with self._lock:
            answer = self._answers.get(key)
            if answer is None:
                answer = self._decide(request, outcome)
                self._answers[key] = answer
        if isinstance(answer, GatewayError):
            raise answer
        return answer

    def _decide(self, request: PaymentRequest, outcome: ResultKind) -> PaymentResult | GatewayError:
        card = request.card
        if not luhn_valid(card.number):
            return CardDeclined("invalid_number", "The card number is not valid.")
        if card.number in DECLINING_CARDS:
            reason, message = DECLINING_CARDS[card.number]
            return CardDeclined(reason, message, processor_code=f"simulated_{reason}")
        digest = _digest(self.name, request.idempotency_key)
        txn, processor = _SHAPES[self.name](outcome, digest, request)
        return PaymentResult(outcome, txn, card.brand, card.last4, processor)
