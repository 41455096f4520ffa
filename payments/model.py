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
