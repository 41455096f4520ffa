from __future__ import annotations

import string

import pytest

from ivr.cards import Reason
from ivr.prompts import SUPPORTED_LANGUAGES, UnsupportedLanguage, catalog
from ivr.speech import (
    announced_merchant,
    speak_amount,
    speak_code,
    speak_list,
    spell_number,
)
from payments.project_settings import ProjectSettings


@pytest.mark.parametrize(
    ("cents", "currency", "language", "spoken"),
    [
        (150_00, "USD", "en-US", "one hundred fifty dollars"),
        (150_25, "USD", "en-US", "one hundred fifty dollars and twenty-five cents"),
        (1_00, "USD", "en-US", "one dollar"),
        (1_01, "USD", "en-US", "one dollar and one cent"),
        (99, "USD", "en-US", "ninety-nine cents"),
        (
            1_234_56,
            "USD",
            "en-US",
            "one thousand, two hundred thirty-four dollars and fifty-six cents",
        ),
        (20_00, "GBP", "en-US", "twenty pounds"),
        (150_00, "USD", "es-US", "ciento cincuenta dólares"),
        (150_25, "USD", "es-US", "ciento cincuenta dólares con veinticinco centavos"),
        (1_00, "USD", "es-US", "un dólar"),
        (21_00, "USD", "es-US", "veintiún dólares"),
        (101_01, "USD", "es-US", "ciento un dólares con un centavo"),
        (1_000_000_00, "USD", "es-US", "un millón de dólares"),
        (12_50, "EUR", "es-US", "doce euros con cincuenta céntimos"),
    ],
)
def test_amounts_are_spoken_in_words(cents: int, currency: str, language: str, spoken: str) -> None:
    assert speak_amount(cents, currency, language) == spoken


def test_a_currency_without_unit_names_spells_its_code() -> None:
    assert speak_amount(5_50, "jpy", "en-US") == "five and fifty J P Y"


def test_numbers_before_a_noun_use_the_short_spanish_form() -> None:
    assert spell_number(3, "es-US") == "tres"
    assert spell_number(31, "es-US") == "treinta y un"
    assert spell_number(4, "en-US") == "four"


def test_codes_are_read_digit_by_digit_in_groups_a_caller_can_write_down() -> None:
    assert speak_code("12345678") == "1 2 3 4, 5 6 7 8"
    assert speak_code("123456") == "1 2 3, 4 5 6"
    assert speak_code("1234567") == "1 2 3 4, 5 6 7"
    assert speak_code("4242") == "4 2 4 2"


def test_the_merchant_is_announced_by_its_name_else_by_a_speakable_slug() -> None:
    assert announced_merchant(ProjectSettings(display_name="iHerb"), "iherb") == "iHerb"
    assert announced_merchant(ProjectSettings(), "demo") == "Demo"
    assert announced_merchant(ProjectSettings(), "acme-dental_care") == "Acme Dental Care"


def test_lists_join_with_the_languages_and() -> None:
    assert (
        speak_list(["Visa", "Mastercard", "Discover"], "en-US") == "Visa, Mastercard and Discover"
    )
    assert speak_list(["Visa", "JCB"], "es-US") == "Visa y JCB"
    assert speak_list(["Visa"], "es-US") == "Visa"


def _placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_every_catalog_has_the_same_prompts_placeholders_and_currencies() -> None:
    english = catalog("en-US")
    for language in SUPPORTED_LANGUAGES:
        other = catalog(language)
        assert other.prompts.keys() == english.prompts.keys(), language
        assert other.currencies.keys() == english.currencies.keys(), language
        for key, text in english.prompts.items():
            assert _placeholders(other.prompts[key]) == _placeholders(text), (language, key)
        assert other.voice


def test_every_refusal_reason_has_a_sentence() -> None:
    for reason in Reason:
        assert f"reason_{reason}" in catalog("en-US").prompts


def test_an_unknown_language_is_refused() -> None:
    with pytest.raises(UnsupportedLanguage, match="fr-FR"):
        catalog("fr-FR")
