"""What the card frame is handed and says, apart from its routes (api/widget.py).

The CSRF token bound to a session, where the frame may be embedded (CSP `frame-ancestors` and
the parent origin results are posted to), amounts as shown, the messages for a refused card or a
closed session, and the brand and postal-code rules the frame checks with, taken from the same
tables the server checks with.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from werkzeug.exceptions import Forbidden

from gateways.cards import BRANDS
from ivr import cards
from payments.model import Status
from payments.project_settings import normalize_origin

CSRF_HEADER = "X-Paydial-CSRF"
CURRENCY_SYMBOLS = {"usd": "$", "eur": "€", "gbp": "£", "cad": "CA$", "aud": "A$"}
CLOSED_MESSAGES = {
    Status.PAYMENT_SUCCESS: "This payment is complete.",
    Status.PAYMENT_AUTHORIZED: "This payment is complete.",
    Status.EXPIRED: "This payment link has expired. Ask for a new one.",
}
NOT_OPEN = "This payment is no longer open."
REASON_MESSAGES = {
    cards.Reason.INVALID_CARD_NUMBER: "The card number has the wrong number of digits.",
    cards.Reason.LUHN: "This card number is not valid. Check the digits.",
    cards.Reason.INVALID_CARD_TYPE: "This card brand is not recognised.",
    cards.Reason.CARD_TYPE_NOT_ACCEPTED: "This card brand is not accepted here.",
    cards.Reason.INVALID_DATE: "The expiry date is not a valid month and year.",
    cards.Reason.CARD_EXPIRED: "This card has expired.",
    cards.Reason.INVALID_SECURITY_CODE: "The security code has the wrong number of digits.",
}
VELOCITY_LIMITED = "velocity_limited"
VELOCITY_MESSAGE = (
    "This card has failed too many times recently, so it is blocked for now. "
    "Please use a different card, or try again later."
)
BASE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; form-action 'self'; base-uri 'none'"
)


def csrf_token(secret_key: str, session_id: str) -> str:
    """The token only the frame for this session carries; useless for any other session."""
    return hmac.new(
        secret_key.encode(), f"widget-csrf:{session_id}".encode(), hashlib.sha256
    ).hexdigest()


def format_amount(amount_cents: int, currency: str) -> str:
    """12_50, "usd" -> "$12.50"; unknown currencies keep their code."""
    value = f"{amount_cents // 100:,}.{amount_cents % 100:02d}"
    symbol = CURRENCY_SYMBOLS.get(currency.lower())
    return f"{symbol}{value}" if symbol else f"{value} {currency.upper()}"


def frame_ancestors(allowed_origins: list[str], test_mode: bool) -> str:
    """The project's origins; `*` only for a test session of a project that configured none."""
    if allowed_origins:
        return " ".join(allowed_origins)
    return "*" if test_mode else "'none'"


def parent_origin(requested: str | None, allowed_origins: list[str], test_mode: bool) -> str | None:
    """The origin results may be posted to, or None when the frame is opened on its own.

    Raises Forbidden for an origin the project does not allow.
    """
    if not requested:
        return None
    origin = normalize_origin(requested)
    allowed = {normalize_origin(o) for o in allowed_origins}
    if origin is None or (allowed and origin not in allowed) or (not allowed and not test_mode):
        raise Forbidden("This payment form cannot be embedded on that site.")
    return origin


def postal_message(countries: list[str]) -> str:
    """What the shopper is told a postal code must be, for the project's countries."""
    return f"Enter {' or '.join(p.described for p in cards.postal_formats(countries))}."


def frame_postal(countries: list[str]) -> dict[str, str]:
    """The postal code rule as the frame reads it: one pattern and its message."""
    patterns = "|".join(f"(?:{p.pattern})" for p in cards.postal_formats(countries))
    return {"pattern": f"^(?:{patterns})$", "message": postal_message(countries)}


def frame_brands() -> dict[str, dict[str, Any]]:
    """``BRANDS`` as the frame reads it: name, code length, ``[low, high, lengths]`` ranges."""
    return {
        brand.value: {
            "name": rules.name,
            "code": rules.security_code_length,
            "ranges": [[iin.low, iin.high, list(iin.lengths)] for iin in rules.ranges],
        }
        for brand, rules in BRANDS.items()
    }
