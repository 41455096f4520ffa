"""Card-number rules shared by the keypad, the card frame and every gateway: one table, one Luhn.

``BRANDS`` is the only record of which issuer prefixes belong to which brand, how long their card
numbers are and how many digits their security code has. Gateways name the brand from it and
``ivr.cards`` checks keypad entry against it, so the brand a caller hears, the one the API reports
and the one a gateway is told can never disagree. Ranges follow the networks' published IIN
ranges (Mastercard 2221-2720 since 2017, Discover's 622126-622925 UnionPay co-brand, Diners 3095).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum


class Brand(StrEnum):
    """The `card_brand` values the API reports; the order is the order callers hear them in."""

    VISA = "visa"
    MASTERCARD = "mastercard"
    AMEX = "amex"
    DISCOVER = "discover"
    JCB = "jcb"
    DINERS = "diners"


UNKNOWN_BRAND = "unknown"  # what a gateway result says for a number outside every range


@dataclass(frozen=True)
class IinRange:
    """Numbers whose first ``len(low)`` digits lie in ``low..high``, ``lengths`` digits long."""

    low: str
    high: str
    lengths: tuple[int, ...]

    def covers(self, number: str) -> bool:
        head = number[: len(self.low)]
        return len(head) == len(self.low) and self.low <= head <= self.high


@dataclass(frozen=True)
class BrandRules:
    name: str  # the proper name the phone speaks and the widget shows, in every language
    security_code_length: int
    ranges: tuple[IinRange, ...]


_LONG = (16, 17, 18, 19)
_DINERS_INTERNATIONAL = (14, 15, 16, 17, 18, 19)

BRANDS: Mapping[Brand, BrandRules] = {
    Brand.VISA: BrandRules("Visa", 3, (IinRange("4", "4", (13, 16, 19)),)),
    Brand.MASTERCARD: BrandRules(
        "Mastercard", 3, (IinRange("51", "55", (16,)), IinRange("2221", "2720", (16,)))
    ),
    Brand.AMEX: BrandRules(
        "American Express", 4, (IinRange("34", "34", (15,)), IinRange("37", "37", (15,)))
    ),
    Brand.DISCOVER: BrandRules(
        "Discover",
        3,
        (
            IinRange("6011", "6011", _LONG),
            IinRange("622126", "622925", _LONG),
            IinRange("644", "649", _LONG),
            IinRange("65", "65", _LONG),
        ),
    ),
    Brand.JCB: BrandRules("JCB", 3, (IinRange("3528", "3589", _LONG),)),
    Brand.DINERS: BrandRules(
        "Diners Club",
        3,
        (
            IinRange("300", "305", _DINERS_INTERNATIONAL),
            IinRange("3095", "3095", _DINERS_INTERNATIONAL),
            IinRange("36", "36", _DINERS_INTERNATIONAL),
            IinRange("38", "39", _LONG),
        ),
    ),
}


def issuer_range(number: str) -> tuple[Brand, IinRange] | None:
    """The brand and range a number's prefix falls in; the ranges never overlap."""
    if not number.isdigit():
        return None
    for brand, rules in BRANDS.items():
        for iin in rules.ranges:
            if iin.covers(number):
                return brand, iin
    return None


def card_brand(number: str) -> str:
    """Brand from the IIN prefix, so results and prompts can name the card without the PAN."""
    found = issuer_range(number)
    return found[0].value if found else UNKNOWN_BRAND


def luhn_valid(number: str) -> bool:
    """The mod-10 check every card number carries; catches most mistyped digits."""
    if not number.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(number)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0
