"""The vocabulary of a payment session: statuses, modes, gateways, money."""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum


class Status(StrEnum):
    PENDING = "pending"
    COLLECTING = "collecting"
    PAYMENT_SUCCESS = "payment-success"
    PAYMENT_AUTHORIZED = "payment-authorized"
    PAYMENT_FAILED = "payment-failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    ABANDONED = "abandoned"

    @property
    def is_terminal(self) -> bool:
        return self not in (Status.PENDING, Status.COLLECTING)


class AttemptState(StrEnum):
    """Where one payment attempt stands with its gateway."""

    PENDING = "pending"  # handed to the gateway, no answer yet
    SUCCEEDED = "succeeded"
    DECLINED = "declined"
    FAILED = "failed"  # refused before or by the gateway for a reason other than the card
    UNKNOWN = "unknown"  # sent, answer lost: reconciliation finds out
    REVERSING = "reversing"  # approved on a session that had already ended: to be given back
    REVERSED = "reversed"


class OperationState(StrEnum):
    """Where a refund, capture or void stands with its gateway (payments.refunds)."""

    PENDING = "pending"  # recorded, not yet sent
    SENDING = "sending"  # handed to the gateway
    UNKNOWN = "unknown"  # sent, answer lost: looked up, never re-sent
    SUCCEEDED = "succeeded"
    FAILED = "failed"


# Attempts whose money is not yet known: a session holding one may not be cancelled or retried.
UNRESOLVED_ATTEMPT_STATES = (AttemptState.PENDING, AttemptState.UNKNOWN)


class PaymentMode(StrEnum):
    """Payment mode."""

    CHARGE = "charge"
    TOKENIZE = "tokenize"


class Gateway(StrEnum):
    """Payment gateway."""

    STRIPE = "stripe"
    AUTHORIZENET = "authorizenet"
    BRAINTREE = "braintree"
    SHIFT4 = "shift4"


class Environment(StrEnum):
    TEST = "test"
    LIVE = "live"


class Channel(StrEnum):
    VOICE = "voice"
    CHAT = "chat"


def cents_to_decimal_string(cents: int) -> str:
    """150_00 -> "150.00": the wire form of an amount in dollars."""
    return str((Decimal(cents) / 100).quantize(Decimal("0.01")))
