"""Issue 11: the call tells the truth in every state, as the caller hears it through Twilio.

Every test places a whole call with the Twilio-behaving client (signed webhooks, `<Gather>` keys
delivered as Twilio delivers them) and asserts on the parsed TwiML the caller heard and on the
session afterwards; each runs on SQLite and PostgreSQL, with call state in memory and in Redis.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from ivr.phone import Phone, ScriptedKeypad
from ivr.transfer import (
    MAX_SIP_CALLBACK_LENGTH,
    MEMORY,
    MEMORY_REF,
    SESSION,
    STATUS,
    signing_key,
    verify,
)
from payments.accounts import get_project_by_slug
from payments.credentials import CREDENTIALS_PURPOSE, set_credentials
from payments.model import Environment, Gateway
from payments.services import Services
from payments.sessions import CALL_BOUND, expire_due
from payments.store import WebhookEvent
from tests.conftest import (
    PUBLIC_URL,
    TEST_SECRET_KEY,
    Clock,
    attempt_rows,
    count_gateway_calls,
    set_project,
)
from tests.ivr.conftest import AMEX, APPROVED, CVV, EXPIRY
from tests.ivr.twilio_client import sip_headers, twiml

SIP_CALLBACK = "sip:agent@agents.example.com"
PHONE_CALLBACK = "+14155550199"
MASTERCARD = "5555555555554444"
CANCELLED = "The merchant cancelled this payment. No money was taken."
TRANSFER = "Transferring you back now."
STAR_HINT = "Press star at any time to start an entry again."


@pytest.fixture
def gateway_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    return count_gateway_calls(monkeypatch)


@pytest.fixture
def cancel(client: FlaskClient, merchant: dict[str, str]) -> Callable[[str], None]:
    def do(session_id: str) -> None:
        response = client.post(
            f"/v1/sessions/{session_id}/cancel", headers={"Authorization": merchant["test"]}
        )
        assert response.status_code == 204

    return do


class Moments:
    """A keypad that can make something happen (a cancel, time passing) before it keys."""

    def __init__(self, entries: list[str | Callable[[], str] | None]) -> None:
        self.entries = list(entries)
        self.prompts: list[list[str]] = []

    def press(self, prompt: list[str]) -> str | None:
        self.prompts.append(prompt)
        entry = self.entries.pop(0) if self.entries else None
        return entry() if callable(entry) else entry


def then(action: Callable[[], object], keys: str) -> Callable[[], str]:
    def run() -> str:
        action()
        return keys

    return run


def assert_wiped(services: Services, call: Phone) -> None:
    assert services.callstates.get(call.call_sid) is None
    assert services.callstates.take_card(call.call_sid) is None


# --- 1. cancelled while the caller keys -------------------------------------------------------


@pytest.mark.parametrize("moment", ["expiry", "confirm"])
def test_a_cancel_while_the_caller_keys_is_said_at_the_next_webhook_and_no_gateway_is_called(
    moment: str,
    new_session: Callable[..., dict[str, Any]],
    phone: Callable[..., Phone],
    read_session: Callable[[str], dict[str, Any]],
    cancel: Callable[[str], None],
    services: Services,
    gateway_calls: list[str],
) -> None:
    created = new_session(callback=SIP_CALLBACK, memory="Order 42")
    sid = created["session_id"]
    keys: list[str | Callable[[], str] | None]
    if moment == "expiry":
        keys = [APPROVED + "#", then(lambda: cancel(sid), EXPIRY + "#")]
    else:
        keys = [APPROVED + "#", EXPIRY + "#", CVV + "#", then(lambda: cancel(sid), "1")]
    call = phone(to=created["sip_uri"])
    result = call.call(Moments(keys))

    assert result.heard[-2:] == [CANCELLED, TRANSFER]
    assert not any(
        "Still working" in line or "waiting for an answer" in line for line in result.heard
    )
    if moment == "expiry":
        assert not any("security code" in line for line in result.heard)
    [dialed] = result.dialed
    headers = sip_headers(dialed)
    assert headers[STATUS] == "cancelled" and headers[MEMORY] == "Order 42"
    assert verify(headers, signing_key(TEST_SECRET_KEY))
    session = read_session(sid)
    assert session["status"] == "cancelled" and session["error"] is None
    assert gateway_calls == [] and attempt_rows(services, sid) == []
    assert_wiped(services, call)


def test_a_cancel_without_a_callback_says_so_and_hangs_up(
    new_session: Callable[..., dict[str, Any]],
    phone: Callable[..., Phone],
    cancel: Callable[[str], None],
    services: Services,
) -> None:
    created = new_session()
    call = phone(to=created["sip_uri"])
    reply = call.post(f"{PUBLIC_URL}/twilio/voice", status="ringing")
    action = twiml(reply.body).find("Gather")
    assert action is not None
    cancel(created["session_id"])
    reply = call.post(action.get("action", ""), {"Digits": APPROVED, "FinishedOnKey": "#"})

    root = twiml(reply.body)
    assert [say.text for say in root.iter("Say")] == [CANCELLED, "Thank you. Goodbye."]
    assert root.find("Hangup") is not None and root.find("Gather") is None
    assert_wiped(services, call)


# --- 2. a bound session does not expire under its call -------------------------------------------


def test_a_bound_session_outlives_its_expiry_while_the_caller_keys(
    new_session: Callable[..., dict[str, Any]],
    phone: Callable[..., Phone],
    read_session: Callable[[str], dict[str, Any]],
    services: Services,
    clock: Clock,
) -> None:
    created = new_session()
    sweep_closed: list[int] = []

    def half_an_hour_later() -> str:
        clock.advance(minutes=31)  # past the session's 30-minute expiry
        with services.db.transaction() as tx:
            sweep_closed.append(expire_due(tx, clock()))
        return EXPIRY + "#"

    result = phone(to=created["sip_uri"]).call(
        Moments([APPROVED + "#", half_an_hour_later, CVV + "#", "1"])
    )

    assert sweep_closed == [0]
    assert "Your payment was approved." in result.heard
    session = read_session(created["session_id"])
    assert session["status"] == "payment-success"
    bound_until = datetime.fromisoformat(session["expires_at"])
    assert bound_until >= datetime.fromisoformat(session["created_at"]) + CALL_BOUND


def test_a_call_that_vanishes_without_a_status_callback_ends_abandoned_not_expired(
    new_session: Callable[..., dict[str, Any]],
    phone: Callable[..., Phone],
    read_session: Callable[[str], dict[str, Any]],
    services: Services,
    clock: Clock,
) -> None:
    created = new_session()
    call = phone(to=created["sip_uri"])
    reply = call.post(f"{PUBLIC_URL}/twilio/voice", status="ringing")  # and then nothing more
    assert twiml(reply.body).find("Gather") is not None

    clock.advance(minutes=45)
    with services.db.transaction() as tx:
        assert expire_due(tx, clock()) == 0
    assert read_session(created["session_id"])["status"] == "collecting"
    clock.advance(seconds=(CALL_BOUND - timedelta(minutes=45)).total_seconds() + 1)
    with services.db.transaction() as tx:
        assert expire_due(tx, clock()) == 1
    assert read_session(created["session_id"])["status"] == "abandoned"


# --- 3. a session that already ended, dialled again ------------------------------------------


@pytest.mark.parametrize(
    ("ending", "dial_by", "language", "sentence"),
    [
        ("cancel", "sip_uri", "en-US", CANCELLED),
        ("cancel", "sip_uri", "es-US", "El comercio canceló este pago. No se cobró dinero."),
        ("expire", "caller_id", "en-US", "This payment has expired. No money was taken."),
        ("pay", "sip_uri", "en-US", "This payment is already complete."),
        ("pay", "caller_id", "en-US", "This payment is already complete."),
    ],
)
def test_a_session_that_already_ended_says_how_and_transfers_back_without_asking_a_code(
    ending: str,
    dial_by: str,
    language: str,
    sentence: str,
    new_session: Callable[..., dict[str, Any]],
    phone: Callable[..., Phone],
    read_session: Callable[[str], dict[str, Any]],
    cancel: Callable[[str], None],
    clock: Clock,
) -> None:
    created = new_session(callback=PHONE_CALLBACK, language=language)
    if ending == "cancel":
        cancel(created["session_id"])
    elif ending == "expire":
        clock.advance(minutes=31)
    else:
        phone(to=created["sip_uri"]).call(ScriptedKeypad([APPROVED + "#", EXPIRY, CVV, "1"]))
    before = read_session(created["session_id"])
    assert before["is_terminal"]

    kwargs = {"to": created["sip_uri"]} if dial_by == "sip_uri" else {"from_": "+14155550100"}
    result = phone(**kwargs).call(ScriptedKeypad([]))

    assert result.heard[0] == sentence
    assert len(result.heard) == 2  # the sentence, then "transferring you back"
    assert result.dialed == [PHONE_CALLBACK]
    after = read_session(created["session_id"])
    assert (after["status"], after["completed_at"]) == (before["status"], before["completed_at"])


# --- 4. the security code is gathered whole ----------------------------------------------------


def test_a_four_digit_code_on_a_visa_is_refused_whole_instead_of_cut_to_three(
    new_session: Callable[..., dict[str, Any]],
    phone: Callable[..., Phone],
    read_session: Callable[[str], dict[str, Any]],
    gateway_calls: list[str],
) -> None:
    created = new_session()
    call = phone(to=created["sip_uri"])
    reply = call.post(f"{PUBLIC_URL}/twilio/voice", status="ringing")
    for keys in (APPROVED, EXPIRY):
        gather = twiml(reply.body).find("Gather")
        assert gather is not None
        reply = call.post(gather.get("action", ""), {"Digits": keys, "FinishedOnKey": "#"})
    gather = twiml(reply.body).find("Gather")
    assert gather is not None and gather.get("action", "").endswith("step=security_code")
    assert "numDigits" not in gather.attrib and gather.get("finishOnKey") == "#"

    reply = call.post(gather.get("action", ""), {"Digits": "1234", "FinishedOnKey": "#"})
    root = twiml(reply.body)
    says = [say.text for say in root.iter("Say")]
    assert says[0] == "The security code for this card is three digits."
    gather = root.find("Gather")
    assert gather is not None and gather.get("action", "").endswith("step=security_code")
    assert gather_keys_reach_confirm(call, gather.get("action", ""), CVV)
    assert gateway_calls == []
    assert read_session(created["session_id"])["status"] == "collecting"


def gather_keys_reach_confirm(call: Phone, action: str, code: str) -> bool:
    """A code that ends on the timeout (no `#`, FinishedOnKey empty) is taken whole too."""
    reply = call.post(action, {"Digits": code, "FinishedOnKey": ""})
    gather = twiml(reply.body).find("Gather")
    return gather is not None and gather.get("action", "").endswith("step=confirm")


def test_an_amex_code_of_four_digits_ended_by_pound_is_charged(
    new_session: Callable[..., dict[str, Any]],
    phone: Callable[..., Phone],
    read_session: Callable[[str], dict[str, Any]],
) -> None:
    created = new_session()
    result = phone(to=created["sip_uri"]).call(
        ScriptedKeypad([AMEX + "#", EXPIRY + "#", "123#", "6543#", "1"])
    )
    assert "The security code for this card is four digits." in result.heard
    assert read_session(created["session_id"])["status"] == "payment-success"


# --- 5. star, as Twilio delivers it ------------------------------------------------------------


def test_star_starts_the_entry_again_and_keeps_what_follows_it(
    new_session: Callable[..., dict[str, Any]],
    phone: Callable[..., Phone],
    read_session: Callable[[str], dict[str, Any]],
) -> None:
    created = new_session()
    keypad = Moments(
        [
            "4242*" + APPROVED + "#",  # Twilio: Digits="4242*4242424242424242", FinishedOnKey="#"
            "*#",  # a lone star: start the expiry again
            "12*" + EXPIRY + "#",
            "9*",  # a star and nothing after it, then silence: start again
            CVV + "#",
            "1",
        ]
    )
    result = phone(to=created["sip_uri"]).call(keypad)

    assert result.heard.count("Let's start that again.") == 2
    assert not any("not valid" in line or "did not hear" in line for line in result.heard)
    assert keypad.prompts[1][0].startswith("Please enter the expiration date")
    assert keypad.prompts[2][0] == "Let's start that again."
    assert keypad.prompts[4][0] == "Let's start that again."
    session = read_session(created["session_id"])
    assert (session["status"], session["card_last4"]) == ("payment-success", "4242")


# --- 6. silence --------------------------------------------------------------------------------


def test_three_silences_say_no_keys_were_heard_and_fail_with_no_input(
    new_session: Callable[..., dict[str, Any]],
    phone: Callable[..., Phone],
    read_session: Callable[[str], dict[str, Any]],
    gateway_calls: list[str],
) -> None:
    created = new_session(callback=SIP_CALLBACK)
    result = phone(to=created["sip_uri"]).call(ScriptedKeypad(["", "", ""]))

    assert result.heard.count("Sorry, I did not hear anything.") == 3
    assert result.heard[-2:] == [
        "We did not hear any keys, so the payment was not completed.",
        TRANSFER,
    ]
    assert not any("several tries" in line for line in result.heard)
    session = read_session(created["session_id"])
    assert session["status"] == "payment-failed"
    assert session["error"]["code"] == "no_input"
    assert sip_headers(result.dialed[0])[STATUS] == "payment-failed"
    assert gateway_calls == []


# --- 7. confirmation codes ---------------------------------------------------------------------


def test_a_payment_has_a_numeric_confirmation_code_heard_in_groups_and_in_get_and_webhook(
    new_session: Callable[..., dict[str, Any]],
    phone: Callable[..., Phone],
    read_session: Callable[[str], dict[str, Any]],
    services: Services,
) -> None:
    # nothing listens there: the event row is what is checked
    set_project(services, "acme", webhook_url="http://127.0.0.1:9/hooks")
    created = new_session()
    result = phone(to=created["sip_uri"]).call(ScriptedKeypad([APPROVED + "#", EXPIRY, CVV, "1"]))

    session = read_session(created["session_id"])
    code = session["confirmation_code"]
    assert re.fullmatch(r"[1-9]\d{7}", code)
    spoken = f"{' '.join(code[:4])}, {' '.join(code[4:])}"
    assert f"Your confirmation number is {spoken}." in result.heard
    assert session["processor"]["stripe_payment_intent_id"]  # the processor ids stay
    with services.db.transaction() as tx:
        [payload] = tx.scalars(
            select(WebhookEvent.payload).where(WebhookEvent.session_id == created["session_id"])
        ).all()
    assert json.loads(payload)["confirmation_code"] == code


# --- 8, 9 and issue 12's item 12: the SIP transfer URI -----------------------------------------


@pytest.mark.parametrize("outcome", ["payment-success", "payment-failed"])
def test_a_long_callback_with_its_own_headers_and_unicode_memory_stays_under_twilio_limit(
    outcome: str,
    new_session: Callable[..., dict[str, Any]],
    phone: Callable[..., Phone],
    read_session: Callable[[str], dict[str, Any]],
) -> None:
    callback = "sips:agent-queue-7@pbx.example.com:5061;transport=tls?X-Trunk=7&X-Q=a"
    assert len(callback) > MAX_SIP_CALLBACK_LENGTH - 25  # little room is left for the memory
    memory = 'Caller "Zoë" 🎟 said: ' + "ünïcode ✓ " * 2000
    created = new_session(callback=callback, memory=memory[:20_000])
    keys = [APPROVED + "#", EXPIRY, CVV, "1"] if outcome == "payment-success" else ["", "", ""]
    result = phone(to=created["sip_uri"]).call(ScriptedKeypad(keys))

    [dialed] = result.dialed
    assert len(dialed) < 255
    assert dialed.startswith(callback + "&X-Paydial-Session=")
    headers = sip_headers(dialed)
    assert (headers["X-Trunk"], headers["X-Q"]) == ("7", "a")
    assert headers[SESSION] == created["session_id"] and headers[STATUS] == outcome
    assert headers[MEMORY_REF] == "20000" and memory.startswith(headers[MEMORY])
    assert headers[MEMORY].startswith("Caller")  # as much as the budget allows
    assert verify(headers, signing_key(TEST_SECRET_KEY))
    assert read_session(created["session_id"])["memory"] == memory[:20_000]


@pytest.mark.parametrize(
    ("callback", "error_type"),
    [
        ("sip:agent?X-Paydial-Status=payment-success@evil.example.com", "sip_uri"),
        ("sip:a&X-Paydial-Status=payment-success@evil.example.com", "sip_uri"),
        ("sip:agent@agents.example.com?X-Paydial-Status=payment-success", "sip_header_reserved"),
        ("sip:agent@agents.example.com;lr&X-Paydial-Session=1", "sip_uri"),
        ("sip:agent@agents.example.com?Contact=x", "sip_header_name"),
        ("sip:agent@agents.example.com?X-Trunk=a b", "sip_uri"),
        (f"sip:{'a' * 100}@agents.example.com", "sip_uri_too_long"),
    ],
)
def test_a_callback_that_could_smuggle_headers_or_overflow_the_uri_is_refused(
    callback: str,
    error_type: str,
    client: FlaskClient,
    merchant: dict[str, str],
) -> None:
    body = {
        "project": "acme",
        "caller": "+14155550100",
        "amount": "5.00",
        "mode": "charge",
        "gateway": "stripe",
        "callback": callback,
    }
    response = client.post("/v1/sessions", json=body, headers={"Authorization": merchant["test"]})
    assert response.status_code == 422
    [detail] = response.get_json()["detail"]
    assert (detail["loc"], detail["type"]) == (["body", "callback"], error_type)


# --- 10. live keys need live credentials -------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/sessions", "/v1/widget-sessions"])
def test_a_live_session_without_live_gateway_credentials_is_refused_before_any_call(
    path: str,
    client: FlaskClient,
    merchant: dict[str, str],
    services: Services,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="payments.sessions")
    if path == "/v1/sessions":
        body: dict[str, Any] = {
            "project": "acme",
            "caller": "+14155550100",
            "amount": "5.00",
            "mode": "charge",
            "gateway": "stripe",
        }
    else:
        body = {"project": "acme", "amount_cents": 500, "gateway": "stripe"}
    live = {"Authorization": merchant["live"]}

    refused = client.post(path, json=body, headers=live)
    assert refused.status_code == 422
    assert refused.get_json()["detail"] == [
        {
            "loc": ["body", "gateway"],
            "msg": "no live credentials are configured for stripe on project acme",
            "type": "gateway_configuration",
        }
    ]
    with services.db.transaction() as tx:
        project = get_project_by_slug(tx, "acme")
        assert project.id in caplog.text
        set_credentials(
            tx,
            project,
            Gateway.STRIPE,
            Environment.LIVE,
            {"secret_key": "sk_live_placeholder"},
            sealer=services.sealer(CREDENTIALS_PURPOSE),
            now=services.clock(),
        )
    assert client.post(path, json=body, headers=live).status_code == 201
    test_mode = client.post(path, json=body, headers={"Authorization": merchant["test"]})
    assert test_mode.status_code == 201  # test mode falls back to the simulator


# --- 11. words -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "code", "card"),
    [
        (AMEX, "6543", "an American Express card ending in 0 0 0 5"),
        (MASTERCARD, CVV, "a Mastercard ending in 4 4 4 4"),
        (APPROVED, CVV, "a Visa card ending in 4 2 4 2"),
    ],
)
def test_the_call_speaks_proper_english_names_the_merchant_and_hints_star_once(
    number: str,
    code: str,
    card: str,
    new_session: Callable[..., dict[str, Any]],
    phone: Callable[..., Phone],
) -> None:
    created = new_session(description=None)
    keypad = Moments(["1234#", number + "#", EXPIRY + "#", code + "#", "2"])
    result = phone(to=created["sip_uri"]).call(keypad)

    assert result.heard[0] == "This is a secure payment to Acme for one hundred fifty dollars."
    assert result.heard.count(STAR_HINT) == 1 and keypad.prompts[0][-1] == STAR_HINT
    assert keypad.prompts[1] == [
        "That card number does not have the right number of digits.",
        "Please enter your card number, followed by the pound key.",
    ]
    assert keypad.prompts[4] == [
        f"You entered {card}, to pay one hundred fifty dollars. "
        "Press 1 to pay, or 2 to enter a different card."
    ]
    assert keypad.prompts[5] == ["Please enter your card number, followed by the pound key."]


def test_a_tokenize_call_starts_its_sentence_with_the_merchant_capitalised(
    new_session: Callable[..., dict[str, Any]],
    phone: Callable[..., Phone],
) -> None:
    created = new_session(mode="tokenize", description=None)
    result = phone(to=created["sip_uri"]).call(ScriptedKeypad([None]))
    assert result.heard[0] == (
        "Acme would like to save a card on file. Your card will be saved, not charged."
    )
