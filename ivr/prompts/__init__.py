"""What the caller hears, one JSON catalog per language, so a translation is a data file, not code.

A catalog holds the TTS ``voice`` for ``<Say>``, the currency unit names ``speech`` needs and the
prompt sentences (``str.format`` placeholders). Every catalog has the same keys and placeholders
(tests/ivr/test_speech.py checks it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

DEFAULT_LANGUAGE = "en-US"
SUPPORTED_LANGUAGES = frozenset({"en-US", "es-US"})


class UnsupportedLanguage(ValueError):
    """The session asked for a language with no catalog."""


@dataclass(frozen=True)
class CurrencyNames:
    major: tuple[str, str]  # singular, plural
    minor: tuple[str, str]


@dataclass(frozen=True)
class Catalog:
    language: str
    voice: str
    conjunction: str  # joins the major and minor units of an amount
    currencies: dict[str, CurrencyNames]
    prompts: dict[str, str]

    def say(self, key: str, **values: object) -> str:
        return self.prompts[key].format(**values)


@cache
def catalog(language: str) -> Catalog:
    """The catalog for a BCP-47 language tag such as ``es-US``."""
    if language not in SUPPORTED_LANGUAGES:
        raise UnsupportedLanguage(f"no prompts for language {language!r}")
    raw = json.loads(resources.files(__package__).joinpath(f"{language}.json").read_text("utf-8"))
    return Catalog(
        language=language,
        voice=raw["voice"],
        conjunction=raw["and"],
        currencies={
            code: CurrencyNames(major=tuple(names["major"]), minor=tuple(names["minor"]))
            for code, names in raw["currencies"].items()
        },
        prompts=raw["prompts"],
    )
