"""A caller number with too many failed payments hears so and goes back before any card entry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select

from ivr.phone import Phone, ScriptedKeypad
from payments.services import Services
from payments.store import PaymentAttempt
from payments.velocity import CallerLockedOut, record_failure
from tests.conftest import Clock
from tests.ivr.conftest import APPROVED, CVV, EXPIRY

CARD: list[str | None] = [APPROVED + "#", EXPIRY, CVV, "1"]
LOCKED = "+14155550100"  # the sessions' caller unless a test says otherwise
OTHER = "+14155550133"
CALLBACK = "+14155550199"
PAYDIAL_NUMBER = "+15005550006"
LOCKED_OUT = {
    "en-US": (
        "Too many payments from this phone number have failed recently, so we cannot take a "
        "card on this call. Please try again later."
    ),
    "es-US": (
        "Demasiados pagos desde este número de teléfono han fallado recientemente, así que no "
        "podemos tomar una tarjeta en esta llamada. Inténtelo más tarde."
    ),
}
TRANSFER = {"en-US": "Transferring you back now.", "es-US": "Lo transferimos ahora."}
CARD_PROMPT = {
    "en-US": "Please enter your card number, followed by the pound key.",
    "es-US": "Por favor, marque el número de su tarjeta y luego la tecla numeral.",
}


@pytest.fixture
def call_backend() -> str:
    """The lockout is decided before call state holds anything: the embedded setup is enough."""
    return "memory-threads"


def lock_out(services: Services, caller: str) -> None:
    """Record as many failed payments for `caller` as the limit allows."""
    with services.db.transaction() as tx:
        for _ in range(services.settings.caller_failure_limit):
            record_failure(tx, caller=caller, card=None, environment="test", now=services.clock())


def attempts(services: Services, session_id: str) -> int:
    with services.db.transaction() as tx:
        return tx.scalar(select(func.count()).where(PaymentAttempt.session_id == session_id)) or 0


@pytest.mark.parametrize("language", ["en-US", "es-US"])
def test_a_locked_out_caller_hears_why_in_the_session_language_and_is_handed_back(
    language: str,
    services: Services,
    new_session: Callable[..., dict[str, Any]],
    phone: Callable[..., Phone],
    read_session: Callable[[str], dict[str, Any]],
) -> None:
    lock_out(services, LOCKED)
    created = new_session(callback=CALLBACK, language=language)

    result = phone(from_=LOCKED, to=created["sip_uri"]).call(ScriptedKeypad(CARD))

    assert result.heard == [LOCKED_OUT[language], TRANSFER[language]]
    assert CARD_PROMPT[language] not in result.heard
    assert result.dialed == [CALLBACK]
    assert result.status == "payment-failed"
    session = read_session(created["session_id"])
    assert session["status"] == "payment-failed"
    assert session["error"] == {"code": "velocity_limited", "message": CallerLockedOut.message}
    assert session["transfer_status"] == "completed"
    assert attempts(services, created["session_id"]) == 0, "nothing reached the gateway"


def test_without_a_callback_the_locked_out_caller_hears_goodbye(
    services: Services,
    new_session: Callable[..., dict[str, Any]],
    phone: Callable[..., Phone],
) -> None:
    lock_out(services, LOCKED)
    created = new_session()

    result = phone(from_=LOCKED, to=created["sip_uri"]).call(ScriptedKeypad(CARD))

    assert result.heard == [LOCKED_OUT["en-US"], "Thank you. Goodbye."]
    assert result.dialed == []


@pytest.mark.parametrize(
    ("session_caller", "calling"),
    [(LOCKED, "sip:agent@agents.example.com"), (OTHER, LOCKED)],
    ids=["the session's caller is locked out", "the number calling is locked out"],
)
def test_either_the_session_caller_or_the_number_calling_being_locked_out_stops_the_call(
    session_caller: str,
    calling: str,
    services: Services,
    new_session: Callable[..., dict[str, Any]],
    phone: Callable[..., Phone],
    read_session: Callable[[str], dict[str, Any]],
) -> None:
    lock_out(services, LOCKED)
    created = new_session(caller=session_caller, callback=CALLBACK)

    result = phone(from_=calling, to=created["sip_uri"]).call(ScriptedKeypad(CARD))

    assert result.heard == [LOCKED_OUT["en-US"], TRANSFER["en-US"]]
    assert read_session(created["session_id"])["status"] == "payment-failed"


def test_a_locked_out_number_keying_an_access_code_is_stopped_before_the_card(
    services: Services,
    new_session: Callable[..., dict[str, Any]],
    phone: Callable[..., Phone],
    read_session: Callable[[str], dict[str, Any]],
) -> None:
    lock_out(services, LOCKED)
    created = new_session(caller=OTHER, callback=CALLBACK)

    result = phone(from_=LOCKED, to=PAYDIAL_NUMBER).call(
        ScriptedKeypad([created["access_code"], *CARD])
    )

    assert result.heard == [
        "Welcome to the secure payment line.",
        "Please enter your six digit access code.",
        LOCKED_OUT["en-US"],
        TRANSFER["en-US"],
    ]
    assert result.dialed == [CALLBACK]
    assert read_session(created["session_id"])["status"] == "payment-failed"
    assert attempts(services, created["session_id"]) == 0


def test_another_caller_number_is_not_affected(
    services: Services,
    new_session: Callable[..., dict[str, Any]],
    phone: Callable[..., Phone],
    read_session: Callable[[str], dict[str, Any]],
) -> None:
    lock_out(services, LOCKED)
    created = new_session(caller=OTHER)

    result = phone(from_=OTHER, to=created["sip_uri"]).call(ScriptedKeypad(CARD))

    assert CARD_PROMPT["en-US"] in result.heard
    assert LOCKED_OUT["en-US"] not in result.heard
    assert read_session(created["session_id"])["status"] == "payment-success"


def test_one_failure_short_of_the_limit_still_pays(
    services: Services,
    new_session: Callable[..., dict[str, Any]],
    phone: Callable[..., Phone],
    read_session: Callable[[str], dict[str, Any]],
) -> None:
    with services.db.transaction() as tx:
        for _ in range(services.settings.caller_failure_limit - 1):
            record_failure(tx, caller=LOCKED, card=None, environment="test", now=services.clock())
    created = new_session()

    phone(from_=LOCKED, to=created["sip_uri"]).call(ScriptedKeypad(CARD))

    assert read_session(created["session_id"])["status"] == "payment-success"


def test_once_the_window_passes_the_same_caller_can_pay(
    services: Services,
    clock: Clock,
    new_session: Callable[..., dict[str, Any]],
    phone: Callable[..., Phone],
    read_session: Callable[[str], dict[str, Any]],
) -> None:
    lock_out(services, LOCKED)
    refused = new_session()
    phone(from_=LOCKED, to=refused["sip_uri"]).call(ScriptedKeypad(CARD))
    assert read_session(refused["session_id"])["status"] == "payment-failed"

    clock.advance(hours=services.settings.velocity_window_hours)
    created = new_session()
    result = phone(from_=LOCKED, to=created["sip_uri"]).call(ScriptedKeypad(CARD))

    assert LOCKED_OUT["en-US"] not in result.heard
    assert "Your payment was approved." in result.heard
    assert read_session(created["session_id"])["status"] == "payment-success"
    assert attempts(services, created["session_id"]) == 1
