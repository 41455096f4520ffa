from __future__ import annotations

from datetime import date

import pytest

from gateways.cards import BRANDS, Brand, IinRange, card_brand, luhn_valid
from ivr.cards import (
    CARD_NUMBER_LENGTHS,
    Reason,
    check_card_number,
    check_expiry,
    check_postal_code,
    check_security_code,
    detect_brand,
    normalize_postal_code,
    parse_expiry,
    security_code_length,
)

ALL = frozenset(Brand)
TODAY = date(2025, 6, 15)


@pytest.mark.parametrize(
    ("number", "brand"),
    [
        ("4242424242424242", Brand.VISA),
        ("4222222222222", Brand.VISA),
        ("5555555555554444", Brand.MASTERCARD),
        ("2223003122003222", Brand.MASTERCARD),
        ("2720990000000007", Brand.MASTERCARD),
        ("378282246310005", Brand.AMEX),
        ("341111111111111", Brand.AMEX),
        ("6011111111111117", Brand.DISCOVER),
        ("6221260000000000", Brand.DISCOVER),
        ("6445644564456445", Brand.DISCOVER),
        ("6500000000000002", Brand.DISCOVER),
        ("3530111333300000", Brand.JCB),
        ("30569309025904", Brand.DINERS),
        ("36227206271667", Brand.DINERS),
        ("3095000000000000", Brand.DINERS),
        ("3095999999999999", Brand.DINERS),
        ("38000000000000000", Brand.DINERS),
        ("6229250000000000", Brand.DISCOVER),
        ("3589000000000000", Brand.JCB),
    ],
)
def test_brand_is_detected_from_the_issuer_prefix(number: str, brand: Brand) -> None:
    assert detect_brand(number) is brand


@pytest.mark.parametrize(
    "number",
    [
        "2721000000000000",
        "2220990000000000",
        "6221250000000000",
        "6229260000000000",
        "3094000000000000",
        "3096000000000000",
        "3060000000000000",
        "3527000000000000",
        "3590000000000000",
        "6012000000000000",
        "6439999999999999",
        "9999999999999995",
        "",
    ],
)
def test_numbers_outside_every_issuer_range_have_no_brand(number: str) -> None:
    assert detect_brand(number) is None


def test_luhn_accepts_valid_numbers_and_rejects_a_single_slip() -> None:
    assert luhn_valid("4242424242424242")
    assert luhn_valid("378282246310005")
    assert not luhn_valid("4242424242424241")
    assert not luhn_valid("42424242a4242424")


@pytest.mark.parametrize(
    ("number", "reason"),
    [
        ("4242424242424242", None),
        ("42424242424", Reason.INVALID_CARD_NUMBER),  # 11 digits
        ("42424242424242424242", Reason.INVALID_CARD_NUMBER),  # 20 digits
        ("4242 4242", Reason.INVALID_CARD_NUMBER),
        ("4242424242424241", Reason.LUHN),
        ("9999999999999995", Reason.INVALID_CARD_TYPE),
        ("37828224631000", Reason.LUHN),
        ("378282246310005", None),
        ("4242424242426", Reason.LUHN),
        ("424242424242424", Reason.INVALID_CARD_NUMBER),  # Luhn-valid, but Visa is never 15 long
        ("3782822463100052", Reason.INVALID_CARD_NUMBER),  # Amex is always 15
        ("5555555555554440008", Reason.INVALID_CARD_NUMBER),  # Mastercard is always 16
        ("4111111111111111110", None),  # Visa may be 19
        ("36227206271667", None),  # Diners International may be 14 ...
        ("38000000000006", Reason.INVALID_CARD_NUMBER),  # ... but 38-39 start at 16
        ("601111111111116", Reason.INVALID_CARD_NUMBER),  # Discover is 16-19
        ("6011000000000000001", None),
        ("353011133330001", Reason.INVALID_CARD_NUMBER),  # JCB is 16-19
    ],
)
def test_card_number_checks_length_then_luhn_then_brand(number: str, reason: Reason | None) -> None:
    assert check_card_number(number, ALL) == reason


def _neighbours(iin: IinRange) -> list[str]:
    """Each edge of a range and the prefix just outside it, at the range's own width."""
    width = len(iin.low)
    outside = [int(iin.low) - 1, int(iin.high) + 1]
    return [iin.low, iin.high] + [str(n).zfill(width) for n in outside if 0 <= n < 10**width]


@pytest.mark.parametrize(
    ("brand", "iin"), [(brand, iin) for brand, rules in BRANDS.items() for iin in rules.ranges]
)
def test_keypad_and_gateways_agree_at_every_range_edge(brand: Brand, iin: IinRange) -> None:
    for prefix in _neighbours(iin):
        number = prefix.ljust(16, "0")
        assert (detect_brand(number) or "unknown") == card_brand(number), prefix
    assert detect_brand(iin.low.ljust(16, "0")) is brand
    assert detect_brand(iin.high.ljust(16, "9")) is brand


def _valid_number(prefix: str, length: int) -> str:
    body = prefix.ljust(length - 1, "0")
    return next(body + digit for digit in "0123456789" if luhn_valid(body + digit))


@pytest.mark.parametrize(
    ("brand", "iin"), [(brand, iin) for brand, rules in BRANDS.items() for iin in rules.ranges]
)
def test_exactly_the_lengths_the_table_gives_a_range_are_accepted(
    brand: Brand, iin: IinRange
) -> None:
    for length in CARD_NUMBER_LENGTHS:
        for prefix in (iin.low, iin.high):
            expected = None if length in iin.lengths else Reason.INVALID_CARD_NUMBER
            assert check_card_number(_valid_number(prefix, length), {brand}) == expected, length


def test_a_valid_card_of_a_brand_the_project_does_not_take_is_refused() -> None:
    accepted = frozenset({Brand.VISA, Brand.MASTERCARD})
    assert check_card_number("378282246310005", accepted) is Reason.CARD_TYPE_NOT_ACCEPTED
    assert check_card_number("4242424242424242", accepted) is None


@pytest.mark.parametrize(
    ("mmyy", "reason"),
    [
        ("0625", None),  # the current month is still good
        ("1230", None),
        ("0525", Reason.CARD_EXPIRED),
        ("1224", Reason.CARD_EXPIRED),
        ("0025", Reason.INVALID_DATE),
        ("1325", Reason.INVALID_DATE),
        ("125", Reason.INVALID_DATE),
        ("12345", Reason.INVALID_DATE),
        ("12a5", Reason.INVALID_DATE),
        ("1299", Reason.INVALID_DATE),  # 74 years out is a mistyped year
    ],
)
def test_expiry_is_mmyy_with_a_real_month_not_in_the_past(mmyy: str, reason: Reason | None) -> None:
    assert check_expiry(mmyy, TODAY) == reason


def test_expiry_parses_to_month_and_four_digit_year() -> None:
    assert parse_expiry("0731") == (7, 2031)
    assert parse_expiry("0031") is None


def test_security_code_is_four_digits_for_amex_and_three_otherwise() -> None:
    assert security_code_length(Brand.AMEX) == 4
    assert security_code_length(Brand.VISA) == 3
    assert security_code_length(Brand.DINERS) == 3
    assert security_code_length(None) == 3  # until the number names a brand
    assert [security_code_length(b) for b in Brand] == [
        BRANDS[b].security_code_length for b in Brand
    ]
    assert check_security_code("1234", Brand.AMEX) is None
    assert check_security_code("123", Brand.AMEX) is Reason.INVALID_SECURITY_CODE
    assert check_security_code("123", Brand.MASTERCARD) is None
    assert check_security_code("1234", Brand.MASTERCARD) is Reason.INVALID_SECURITY_CODE
    assert check_security_code("", Brand.VISA) is Reason.INVALID_SECURITY_CODE


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("94107", None),
        ("941071234", None),
        ("9410", Reason.INVALID_POSTAL_CODE),
        ("941071", Reason.INVALID_POSTAL_CODE),
        ("", Reason.INVALID_POSTAL_CODE),
    ],
)
def test_zip_is_five_or_nine_digits(code: str, reason: Reason | None) -> None:
    assert check_postal_code(code) == reason


@pytest.mark.parametrize(
    ("typed", "countries", "normalized"),
    [
        ("94107", ["US", "CA"], "94107"),
        ("94107-1234", ["US"], "941071234"),
        ("94107 1234", ["US"], "941071234"),
        ("K1A 0B1", ["US", "CA"], "K1A 0B1"),
        ("k1a0b1", ["CA"], "K1A 0B1"),
        (" K1A 0B1 ", ["CA"], "K1A 0B1"),
        ("K1A 0B1", ["US"], None),
        ("94107", ["CA"], None),
        ("941O7", ["US", "CA"], None),
        ("SW1A 1AA", ["GB"], "SW1A 1AA"),  # no format known here for GB: any postal code
        ("", ["US", "CA"], None),
    ],
)
def test_a_typed_postal_code_fits_the_countries_formats_in_its_gateway_form(
    typed: str, countries: list[str], normalized: str | None
) -> None:
    assert normalize_postal_code(typed, countries) == normalized
