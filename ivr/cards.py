"""Card rules checked the moment each keypad entry arrives, so the caller hears what was wrong.

Every check returns ``None`` when the entry is acceptable, otherwise a ``Reason`` whose values
borrow Twilio ``<Pay>``'s error vocabulary where it has a word for it. Nothing here logs or raises
with card data in the message.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import date
from enum import StrEnum

from gateways.base import luhn_valid as luhn_ok  # one mod-10 check for keypad, frame and gateways

CARD_NUMBER_LENGTHS = range(12, 20)
POSTAL_CODE_LENGTHS = (5, 9)
_MAX_YEARS_AHEAD = 20  # a card valid further out than this is a mistyped year


class Brand(StrEnum):
    VISA = "visa"
    MASTERCARD = "mastercard"
    AMEX = "amex"
    DISCOVER = "discover"
    JCB = "jcb"
    DINERS = "diners"


class Reason(StrEnum):
    """Why an entry was refused; the prompt catalogs have one sentence per value."""

    INVALID_CARD_NUMBER = "invalid-card-number"
    LUHN = "luhn"
    INVALID_CARD_TYPE = "invalid-card-type"
    CARD_TYPE_NOT_ACCEPTED = "card-type-not-accepted"
    INVALID_DATE = "invalid-date"
    CARD_EXPIRED = "card-expired"
    INVALID_SECURITY_CODE = "invalid-security-code"
    INVALID_POSTAL_CODE = "invalid-postal-code"


# (brand, lowest prefix, highest prefix, valid lengths); a prefix range compares the leading digits.
_PREFIXES: tuple[tuple[Brand, int, int, tuple[int, ...]], ...] = (
    (Brand.AMEX, 34, 34, (15,)),
    (Brand.AMEX, 37, 37, (15,)),
    (Brand.VISA, 4, 4, (13, 16, 19)),
    (Brand.MASTERCARD, 51, 55, (16,)),
    (Brand.MASTERCARD, 2221, 2720, (16,)),
    (Brand.DISCOVER, 6011, 6011, (16, 17, 18, 19)),
    (Brand.DISCOVER, 622126, 622925, (16, 17, 18, 19)),
    (Brand.DISCOVER, 644, 649, (16, 17, 18, 19)),
    (Brand.DISCOVER, 65, 65, (16, 17, 18, 19)),
    (Brand.JCB, 3528, 3589, (16, 17, 18, 19)),
    (Brand.DINERS, 300, 305, (14, 15, 16, 17, 18, 19)),
    (Brand.DINERS, 3095, 3095, (14, 15, 16, 17, 18, 19)),
    (Brand.DINERS, 36, 36, (14, 15, 16, 17, 18, 19)),
    (Brand.DINERS, 38, 39, (16, 17, 18, 19)),
)


def _match(number: str) -> tuple[Brand, tuple[int, ...]] | None:
    for brand, low, high, lengths in _PREFIXES:
        width = len(str(low))
        if len(number) >= width and low <= int(number[:width]) <= high:
            return brand, lengths
    return None


def detect_brand(number: str) -> Brand | None:
    """The brand from the issuer prefix, so confirmation and CVV length need no gateway call."""
    if not number.isdigit():
        return None
    found = _match(number)
    return found[0] if found else None


def check_card_number(number: str, accepted: Collection[Brand]) -> Reason | None:
    """Length, then checksum, then brand: the order that tells the caller the most useful thing."""
    if not number.isdigit() or len(number) not in CARD_NUMBER_LENGTHS:
        return Reason.INVALID_CARD_NUMBER
    if not luhn_ok(number):
        return Reason.LUHN
    found = _match(number)
    if found is None:
        return Reason.INVALID_CARD_TYPE
    brand, lengths = found
    if len(number) not in lengths:
        return Reason.INVALID_CARD_NUMBER
    if brand not in accepted:
        return Reason.CARD_TYPE_NOT_ACCEPTED
    return None


def parse_expiry(mmyy: str) -> tuple[int, int] | None:
    """MMYY keyed on the phone -> (month, four-digit year), or None when it is not a date."""
    if len(mmyy) != 4 or not mmyy.isdigit():
        return None
    month, year = int(mmyy[:2]), 2000 + int(mmyy[2:])
    if not 1 <= month <= 12:
        return None
    return month, year


def check_expiry(mmyy: str, today: date) -> Reason | None:
    """A card is good through the last day of its expiry month."""
    parsed = parse_expiry(mmyy)
    if parsed is None:
        return Reason.INVALID_DATE
    month, year = parsed
    if (year, month) < (today.year, today.month):
        return Reason.CARD_EXPIRED
    if year > today.year + _MAX_YEARS_AHEAD:
        return Reason.INVALID_DATE
    return None


def security_code_length(brand: Brand | None) -> int:
    """American Express prints four digits on the front; everyone else three on the back."""
    return 4 if brand is Brand.AMEX else 3


def check_security_code(code: str, brand: Brand | None) -> Reason | None:
    if code.isdigit() and len(code) == security_code_length(brand):
        return None
    return Reason.INVALID_SECURITY_CODE


def check_postal_code(code: str) -> Reason | None:
    """US ZIP: five digits, or ZIP+4 keyed as nine."""
    if code.isdigit() and len(code) in POSTAL_CODE_LENGTHS:
        return None
    return Reason.INVALID_POSTAL_CODE
