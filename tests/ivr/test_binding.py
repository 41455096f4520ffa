"""Which session a call is for: SIP URI, SIP header, caller ID, then the keyed access code."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient

from ivr.binding import sip_user
from ivr.phone import Phone, ScriptedKeypad
from tests.conftest import PUBLIC_URL
from tests.ivr.conftest import APPROVED, CVV, EXPIRY


@pytest.fixture
def call_backend() -> str:
    """Binding does not depend on where call state lives: the embedded setup is enough."""
    return "memory-threads"


CARD = [APPROVED + "#", EXPIRY, CVV, "1"]
PAYDIAL_NUMBER = "+15005550006"


def test_the_user_part_of_a_sip_uri_names_the_session() -> None:
    assert sip_user("sip:abc-123@pay.sip.example.com;transport=tls") == "abc-123"
    assert sip_user("<sips:abc@host>") == "abc"
    assert sip_user("+15005550006") is None


def test_a_call_to_the_session_sip_uri_is_bound_to_it(
    new_session: Callable[..., dict[str, Any]],
    phone: Callable[..., Phone],
    read_session: Callable[[str], dict[str, Any]],
) -> None:
    created = new_session(caller="+14155550111")
    new_session(caller="+14155550111")  # a newer session for the same caller must not win
    result = phone(from_="+14155550111", to=created["sip_uri"]).call(ScriptedKeypad(CARD))

    assert result.succeeded
    assert read_session(created["session_id"])["status"] == "payment-success"


def test_the_x_paydial_session_header_binds_when_the_uri_does_not(
    new_session: Callable[..., dict[str, Any]],
    phone: Callable[..., Phone],
    read_session: Callable[[str], dict[str, Any]],
) -> None:
    created = new_session()
    call = phone(
        from_="sip:agent@agents.example.com",
        to="sip:payments@pay.sip.example.com",
        extra={"SipHeader_X-Paydial-Session": created["session_id"]},
    )
    assert call.call(ScriptedKeypad(CARD)).succeeded
    assert read_session(created["session_id"])["status"] == "payment-success"


def test_the_caller_id_binds_the_callers_only_pending_session(
    new_session: Callable[..., dict[str, Any]],
    phone: Callable[..., Phone],
    read_session: Callable[[str], dict[str, Any]],
) -> None:
    created = new_session(caller="+14155550122")
    new_session(caller="+14155550188")  # someone else's
    result = phone(from_="+14155550122", to=PAYDIAL_NUMBER).call(ScriptedKeypad(CARD))

    assert "Please enter your six digit access code." not in result.heard
    assert result.succeeded
    assert read_session(created["session_id"])["status"] == "payment-success"


def test_caller_id_matching_two_merchants_sessions_binds_neither_until_the_code_is_keyed(
    new_session: Callable[..., dict[str, Any]],
    phone: Callable[..., Phone],
    read_session: Callable[[str], dict[str, Any]],
    client: FlaskClient,
    make_project: Callable[..., str],
    make_key: Callable[..., str],
    clock: Any,
) -> None:
    caller = "+14155550123"
    make_project("bakery", "Bakery LLC")
    bakery_key = {"Authorization": f"Bearer {make_key('bakery')}"}
    created = client.post(
        "/v1/sessions",
        json={
            "project": "bakery",
            "caller": caller,
            "amount": "12.00",
            "mode": "charge",
            "gateway": "stripe",
        },
        headers=bakery_key,
    )
    assert created.status_code == 201
    bakery = created.get_json()
    clock.advance(minutes=1)
    acme = new_session(caller=caller)  # the newer one, which the old rule would have bound

    # Without the code nobody is charged: the caller hears why the code is needed, and both wait.
    silent = phone(from_=caller, to=PAYDIAL_NUMBER).call(ScriptedKeypad([None]))
    assert silent.heard == [
        "Welcome to the secure payment line.",
        "This phone number has more than one payment waiting, so we need the code of the one "
        "you are calling about.",
        "Please enter your six digit access code.",
    ]
    assert read_session(acme["session_id"])["status"] == "pending"
    assert (
        client.get(f"/v1/sessions/{bakery['session_id']}", headers=bakery_key).get_json()["status"]
        == "pending"
    )

    # With the bakery's code, the caller reaches the bakery's payment and no other.
    paid = phone(from_=caller, to=PAYDIAL_NUMBER).call(
        ScriptedKeypad([bakery["access_code"], *CARD])
    )
    assert "This is a secure payment to Bakery for twelve dollars." in paid.heard
    assert paid.succeeded
    session = client.get(f"/v1/sessions/{bakery['session_id']}", headers=bakery_key).get_json()
    assert session["status"] == "payment-success"
    assert read_session(acme["session_id"])["status"] == "pending"

    # One pending session is left for this caller ID: the next call binds it without a code.
    last = phone(from_=caller, to=PAYDIAL_NUMBER).call(ScriptedKeypad(CARD))
    assert "Please enter your six digit access code." not in last.heard
    assert read_session(acme["session_id"])["status"] == "payment-success"


def test_two_pending_sessions_of_one_merchant_for_a_caller_also_need_the_code(
    new_session: Callable[..., dict[str, Any]],
    phone: Callable[..., Phone],
    read_session: Callable[[str], dict[str, Any]],
    clock: Any,
) -> None:
    older = new_session(caller="+14155550124", amount="20.00")
    clock.advance(minutes=1)
    newer = new_session(caller="+14155550124")
    result = phone(from_="+14155550124", to=PAYDIAL_NUMBER).call(
        ScriptedKeypad([older["access_code"], *CARD])
    )

    assert "Please enter your six digit access code." in result.heard
    assert "This is a secure payment to Acme for twenty dollars." in result.heard
    assert read_session(older["session_id"])["status"] == "payment-success"
    assert read_session(newer["session_id"])["status"] == "pending"


def test_an_unknown_caller_binds_by_keying_the_access_code(
    new_session: Callable[..., dict[str, Any]],
    phone: Callable[..., Phone],
    read_session: Callable[[str], dict[str, Any]],
) -> None:
    created = new_session(caller="+14155550133")
    result = phone(from_="+14155550999", to=PAYDIAL_NUMBER).call(
        ScriptedKeypad(["000000", created["access_code"], *CARD])
    )

    assert "That access code was not found." in result.heard
    assert result.succeeded
    assert read_session(created["session_id"])["status"] == "payment-success"


def test_three_wrong_access_codes_end_the_call_politely(
    new_session: Callable[..., dict[str, Any]],
    phone: Callable[..., Phone],
    read_session: Callable[[str], dict[str, Any]],
) -> None:
    created = new_session(caller="+14155550144")
    result = phone(from_="+14155550999", to=PAYDIAL_NUMBER).call(
        ScriptedKeypad(["111111", "222222", "333333", created["access_code"]])
    )

    assert not result.caller_hung_up  # Paydial hung up, before the fourth entry
    assert "Thank you. Goodbye." in result.heard
    assert read_session(created["session_id"])["status"] == "pending"


def test_a_finished_session_is_never_bound_again(
    new_session: Callable[..., dict[str, Any]],
    phone: Callable[..., Phone],
    read_session: Callable[[str], dict[str, Any]],
    client: FlaskClient,
    merchant: dict[str, str],
) -> None:
    created = new_session()
    cancel = client.post(
        f"/v1/sessions/{created['session_id']}/cancel", headers={"Authorization": merchant["test"]}
    )
    assert cancel.status_code == 204
    result = phone(from_="+14155550999", to=created["sip_uri"]).call(ScriptedKeypad([None]))

    assert result.heard == [
        "The merchant cancelled this payment. No money was taken.",
        "Thank you. Goodbye.",
    ]
    assert read_session(created["session_id"])["status"] == "cancelled"


def test_a_session_bound_to_one_call_is_not_bound_by_another(
    new_session: Callable[..., dict[str, Any]],
    phone: Callable[..., Phone],
    read_session: Callable[[str], dict[str, Any]],
) -> None:
    created = new_session()
    first = phone(to=created["sip_uri"])
    first.post(f"{PUBLIC_URL}/twilio/voice", status="ringing")
    second = phone(to=created["sip_uri"]).call(ScriptedKeypad([None]))

    assert "Please enter your six digit access code." in second.heard
    assert read_session(created["session_id"])["status"] == "collecting"
