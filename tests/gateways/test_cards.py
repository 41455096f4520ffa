"""The one brand table: its edges, that no ranges overlap, and the brands gateways report."""

from __future__ import annotations

from itertools import combinations

import pytest

from gateways.base import Card
from gateways.cards import BRANDS, Brand, IinRange


def _card(prefix: str) -> Card:
    return Card(prefix.ljust(16, "0"), 12, 2031, "123")


def test_brands_are_exactly_the_card_brand_values_the_api_reports() -> None:
    assert [brand.value for brand in Brand] == [
        "visa", "mastercard", "amex", "discover", "jcb", "diners",
    ]  # fmt: skip
    assert set(BRANDS) == set(Brand)


@pytest.mark.parametrize(
    ("prefix", "brand"),
    [
        ("4", "visa"),
        ("50", "unknown"),
        ("51", "mastercard"),
        ("55", "mastercard"),
        ("56", "unknown"),
        ("2220", "unknown"),
        ("2221", "mastercard"),
        ("2720", "mastercard"),
        ("2721", "unknown"),
        ("33", "unknown"),
        ("34", "amex"),
        ("37", "amex"),
        ("6010", "unknown"),
        ("6011", "discover"),
        ("6012", "unknown"),
        ("622125", "unknown"),
        ("622126", "discover"),
        ("622925", "discover"),
        ("622926", "unknown"),
        ("643", "unknown"),
        ("644", "discover"),
        ("649", "discover"),
        ("65", "discover"),
        ("66", "unknown"),
        ("3527", "unknown"),
        ("3528", "jcb"),
        ("3589", "jcb"),
        ("3590", "unknown"),
        ("299", "unknown"),
        ("300", "diners"),
        ("305", "diners"),
        ("306", "unknown"),
        ("3094", "unknown"),
        ("3095", "diners"),
        ("3096", "unknown"),
        ("35", "unknown"),
        ("36", "diners"),
        ("38", "diners"),
        ("39", "diners"),
    ],
)
def test_gateways_name_the_brand_from_the_issuer_prefix_up_to_each_range_edge(
    prefix: str, brand: str
) -> None:
    card = _card(prefix)
    assert card.brand == brand
    assert repr(card) == f"Card(brand={brand!r}, last4='0000')"  # a plain string, not Brand.X


def _span(iin: IinRange, width: int) -> tuple[str, str]:
    return iin.low.ljust(width, "0"), iin.high.ljust(width, "9")


def test_no_two_issuer_ranges_overlap_so_their_order_never_matters() -> None:
    ranges = [(brand, iin) for brand, rules in BRANDS.items() for iin in rules.ranges]
    for (brand_a, a), (brand_b, b) in combinations(ranges, 2):
        width = max(len(a.low), len(b.low))
        (a_low, a_high), (b_low, b_high) = _span(a, width), _span(b, width)
        assert a_high < b_low or b_high < a_low, (brand_a, a, brand_b, b)


def test_every_range_is_well_formed() -> None:
    for rules in BRANDS.values():
        for iin in rules.ranges:
            assert len(iin.low) == len(iin.high) and iin.low <= iin.high, iin
            assert iin.lengths and all(12 <= n <= 19 for n in iin.lengths), iin


def test_amex_codes_are_four_digits_and_every_other_brand_three() -> None:
    assert {brand: rules.security_code_length for brand, rules in BRANDS.items()} == {
        Brand.VISA: 3,
        Brand.MASTERCARD: 3,
        Brand.AMEX: 4,
        Brand.DISCOVER: 3,
        Brand.JCB: 3,
        Brand.DINERS: 3,
    }


def test_brand_names_are_proper_names() -> None:
    assert [BRANDS[b].name for b in Brand] == [
        "Visa",
        "Mastercard",
        "American Express",
        "Discover",
        "JCB",
        "Diners Club",
    ]
