"""Card rules checked the moment each keypad entry arrives, so the caller hears what was wrong.

Every check returns ``None`` when the entry is acceptable, otherwise a ``Reason`` whose values
borrow Twilio ``<Pay>``'s error vocabulary where it has a word for it. Nothing here logs or raises
with card data in the message. Brands, their prefixes, lengths and code lengths come from
``gateways.cards.BRANDS``, the table the gateways name brands from.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from gateways.cards import BRANDS, Brand, issuer_range, luhn_valid

CARD_NUMBER_LENGTHS = range(12, 20)
POSTAL_CODE_LENGTHS = (5, 9)
_MAX_YEARS_AHEAD = 20  # a card valid further out than this is a mistyped year
_DEFAULT_SECURITY_CODE_LENGTH = 3


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


def detect_brand(number: str) -> Brand | None:
    """The brand from the issuer prefix, so confirmation and CVV length need no gateway call."""
    found = issuer_range(number)
    return found[0] if found else None


def check_card_number(number: str, accepted: Collection[Brand]) -> Reason | None:
    """Length, then checksum, then brand: the order that tells the caller the most useful thing."""
    if not number.isdigit() or len(number) not in CARD_NUMBER_LENGTHS:
        return Reason.INVALID_CARD_NUMBER
    if not luhn_valid(number):
        return Reason.LUHN
    found = issuer_range(number)
    if found is None:
        return Reason.INVALID_CARD_TYPE
    brand, iin = found
    if len(number) not in iin.lengths:
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
    """The brand's code length (four for American Express); three while the brand is unknown."""
    if brand is None:
        return _DEFAULT_SECURITY_CODE_LENGTH
    return BRANDS[brand].security_code_length


def check_security_code(code: str, brand: Brand | None) -> Reason | None:
    if code.isdigit() and len(code) == security_code_length(brand):
        return None
    return Reason.INVALID_SECURITY_CODE


def check_postal_code(code: str) -> Reason | None:
    """On the keypad: a US ZIP, five digits, or ZIP+4 keyed as nine (letters cannot be keyed)."""
    if code.isdigit() and len(code) in POSTAL_CODE_LENGTHS:
        return None
    return Reason.INVALID_POSTAL_CODE


@dataclass(frozen=True)
class PostalFormat:
    """How a country's billing postal codes are typed, and how they are named to the shopper."""

    pattern: str  # also compiled by the frame's JavaScript: keep to the common regex subset
    described: str
    normalize: Callable[[str], str]


# Typed formats by ISO 3166 country; the widget accepts those of the project's countries.
POSTAL_FORMATS = {
    "US": PostalFormat(
        r"\d{5}(?:[ -]?\d{4})?",
        "a US ZIP code (12345 or 12345-6789)",
        lambda text: re.sub(r"\D", "", text),
    ),
    "CA": PostalFormat(
        r"[A-Za-z]\d[A-Za-z] ?\d[A-Za-z]\d",
        "a Canadian postal code (A1A 1A1)",
        lambda text: f"{text[:3]} {text[-3:]}".upper(),
    ),
}
ANY_POSTAL_FORMAT = PostalFormat(
    r"[A-Za-z0-9][A-Za-z0-9 -]{1,8}[A-Za-z0-9]", "a postal code", lambda text: text.upper()
)


def postal_formats(countries: Iterable[str]) -> list[PostalFormat]:
    """The formats of these countries, or any postal code when none of them is known here."""
    known = [POSTAL_FORMATS[c] for c in dict.fromkeys(countries) if c in POSTAL_FORMATS]
    return known or [ANY_POSTAL_FORMAT]


def normalize_postal_code(text: str, countries: Iterable[str]) -> str | None:
    """A typed postal code in its gateway form (`12345-6789` -> `123456789`, `k1a0b1` ->
    `K1A 0B1`), or None when it fits none of these countries' formats."""
    text = text.strip()
    for postal in postal_formats(countries):
        if re.fullmatch(postal.pattern, text):
            return postal.normalize(text)
    return None
