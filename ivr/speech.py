"""Turning numbers and codes into words a text-to-speech voice reads naturally.

TTS reads "$150.25" unpredictably; "one hundred fifty dollars and twenty-five cents" it reads
well in any voice. Unit names come from the language's prompt catalog.
"""

from __future__ import annotations

import re

from num2words import num2words

from ivr.prompts import catalog
from payments.project_settings import ProjectSettings


def spell_number(value: int, language: str) -> str:
    """A count in words, in the form used before a noun ("un dólar", not "uno dólar")."""
    lang = language.split("-")[0]
    words: str = num2words(value, lang=lang)
    if lang == "en":
        return words.replace(" and ", " ")  # American usage: "one hundred fifty"
    if lang == "es":
        if words.endswith("veintiuno"):
            words = words[: -len("veintiuno")] + "veintiún"
        elif words == "uno" or words.endswith(" uno"):
            words = words[: -len("uno")] + "un"
        if words.endswith(("millón", "millones")):
            words += " de"  # "un millón de dólares"
    return words


def _units(value: int, names: tuple[str, str], language: str) -> str:
    return f"{spell_number(value, language)} {names[0] if value == 1 else names[1]}"


def speak_amount(cents: int, currency: str, language: str) -> str:
    """150_25 USD -> "one hundred fifty dollars and twenty-five cents"."""
    text = catalog(language)
    major, minor = divmod(cents, 100)
    names = text.currencies.get(currency.upper())
    if names is None:  # no unit names: read the number, then spell the ISO code
        amount = spell_number(major, language)
        if minor:
            amount += f" {text.conjunction} {spell_number(minor, language)}"
        return f"{amount} {' '.join(currency.upper())}"
    if not minor:
        return _units(major, names.major, language)
    if not major:
        return _units(minor, names.minor, language)
    return (
        f"{_units(major, names.major, language)} {text.conjunction} "
        f"{_units(minor, names.minor, language)}"
    )


def speak_code(code: str) -> str:
    """Digits one by one, in groups of four (three for a six-digit code), so a caller can write a
    confirmation code down: "12345678" -> "1 2 3 4, 5 6 7 8"."""
    chars = [char.upper() for char in code if char.isalnum()]
    size = 3 if len(chars) % 4 and len(chars) % 3 == 0 else 4
    groups = [chars[i : i + size] for i in range(0, len(chars), size)]
    return ", ".join(" ".join(group) for group in groups)


def announced_merchant(settings: ProjectSettings, slug: str) -> str:
    """Who the caller hears is asking: the project's ``display_name`` as the merchant wrote it,
    else its slug made speakable at the start of a sentence ("acme-dental" -> "Acme Dental")."""
    if settings.display_name:
        return settings.display_name
    return " ".join(word[:1].upper() + word[1:] for word in re.split(r"[-_\s]+", slug) if word)


def speak_list(items: list[str], language: str) -> str:
    """Visa, Mastercard and American Express: a spoken list in the caller's language."""
    if len(items) < 2:
        return "".join(items)
    return f"{', '.join(items[:-1])} {catalog(language).say('list_and')} {items[-1]}"
