from __future__ import annotations

from datetime import date

import pytest

from ivr.cards import (
    Brand,
    Reason,
    check_card_number,
    check_expiry,
    check_postal_code,
    check_security_code,
    detect_brand,
    luhn_ok,
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
    ],
)
def test_brand_is_detected_from_the_issuer_prefix(number: str, brand: Brand) -> None:
    assert detect_brand(number) is brand


@pytest.mark.parametrize("number", ["2721000000000000", "2220990000000000", "9999999999999995", ""])
def test_numbers_outside_every_issuer_range_have_no_brand(number: str) -> None:
    assert detect_brand(number) is None


def test_luhn_accepts_valid_numbers_and_rejects_a_single_slip() -> None:
    assert luhn_ok("4242424242424242")
    assert luhn_ok("378282246310005")
    assert not luhn_ok("4242424242424241")
    assert not luhn_ok("42424242a4242424")


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
    ],
)
def test_card_number_checks_length_then_luhn_then_brand(number: str, reason: Reason | None) -> None:
    assert check_card_number(number, ALL) == reason


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
