"""The whole call through the Flask app, played by a Twilio-behaving client.

Every test here runs on SQLite and PostgreSQL, with call state in memory (jobs on a thread pool)
and in Redis (jobs inline). After each test, the captured log (DEBUG, SQL parameters included),
every row of every table and every Redis key and value are searched for the card data entered.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from werkzeug.serving import make_server

from ivr.callstate import CallServices
from ivr.phone import Phone, ScriptedKeypad, http_transport
from ivr.transfer import MEMORY, MEMORY_REF, SESSION, STATUS, signing_key, verify
from payments.services import Services
from payments.store import PaymentAttempt
from tests.conftest import (
    PUBLIC_URL,
    REDIS_TEST_URL,
    TEST_SECRET_KEY,
    attempt_rows,
    count_gateway_calls,
)
from tests.ivr.conftest import AMEX, AMEX_CVV, APPROVED, CVV, DECLINED, EXPIRY
from tests.ivr.twilio_client import phone_over, sip_headers, twiml
from tests.leakscan import LeakScan
from tests.ops.test_payment_lanes import eventually

PHONE_CALLBACK = "+14155550199"
SIP_CALLBACK = "sip:agent@agents.example.com"


@pytest.fixture(autouse=True)
def no_card_data_anywhere(
    caplog: pytest.LogCaptureFixture, services: Services, call_backend: str
) -> Iterator[None]:
    """After each test: the card data entered, the expiry and codes included, is nowhere.

    Stricter than the whole-suite scan (tests/leakscan.py), which cannot know a test's expiry
    and security code: here they are searched as whole tokens in logs, rows and Redis.
    """
    caplog.set_level(logging.DEBUG)
    yield
    scan = LeakScan(frozenset({APPROVED, AMEX, DECLINED}), codes=frozenset({EXPIRY, CVV, AMEX_CVV}))
    scan.check("log", "caplog", caplog.text)
    scan.scan_database(services.db.url, "this test")
    if call_backend == "redis-inline":
        client = redis.Redis.from_url(REDIS_TEST_URL)
        scan.scan_redis(client, "this test")
        client.close()
    assert scan.findings == []


@pytest.fixture
def gateway_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    return count_gateway_calls(monkeypatch)


@pytest.mark.parametrize("mode", ["charge", "tokenize"])
@pytest.mark.parametrize("callback", [PHONE_CALLBACK, SIP_CALLBACK])
def test_a_caller_pays_by_keypad_and_is_handed_back(
    mode: str,
    callback: str,
    new_session: Callable[..., dict[str, Any]],
    phone: Callable[..., Phone],
    read_session: Callable[[str], dict[str, Any]],
    gateway_calls: list[str],
) -> None:
    created = new_session(mode=mode, callback=callback, memory="Order 42")
    result = phone(to=created["sip_uri"]).call(ScriptedKeypad([APPROVED + "#", EXPIRY, CVV, "1"]))

    session = read_session(created["session_id"])
    assert session["status"] == "payment-success"
    assert (session["card_brand"], session["card_last4"]) == ("visa", "4242")
    assert session["transfer_status"] == "completed"
    assert len(gateway_calls) == 1
    expected = "Your card has been saved." if mode == "tokenize" else "Your payment was approved."
    assert expected in result.heard
    assert result.succeeded and not result.caller_hung_up
    [dialed] = result.dialed
    if callback == PHONE_CALLBACK:
        assert dialed == PHONE_CALLBACK
    else:
        assert dialed.startswith(SIP_CALLBACK + "?")
        headers = sip_headers(dialed)
        assert headers[SESSION] == created["session_id"]
        assert headers[STATUS] == "payment-success"
        assert headers[MEMORY] == "Order 42"
        assert verify(headers, signing_key(TEST_SECRET_KEY))


def test_an_amex_card_with_a_billing_zip_is_charged(
    new_session: Callable[..., dict[str, Any]],
    phone: Callable[..., Phone],
    read_session: Callable[[str], dict[str, Any]],
    configure_project: Callable[..., None],
) -> None:
    configure_project(require_postal_code=True)
    created = new_session()
    result = phone(to=created["sip_uri"]).call(
        ScriptedKeypad([AMEX + "#", EXPIRY, AMEX_CVV, "94107#", "1"])
    )

    session = read_session(created["session_id"])
    assert (session["status"], session["card_brand"]) == ("payment-success", "amex")
    assert "Please enter the four digit security code, followed by the pound key." in result.heard
    assert result.dialed == []  # no callback: thank and hang up
    assert result.heard[-1] == "Thank you. Goodbye."


def test_settings_changed_over_the_api_are_heard_on_the_next_call(
    client: FlaskClient,
    merchant: dict[str, str],
    new_session: Callable[..., dict[str, Any]],
    phone: Callable[..., Phone],
    read_session: Callable[[str], dict[str, Any]],
) -> None:
    before = phone(to=new_session()["sip_uri"]).call(ScriptedKeypad([None]))
    assert any("secure payment to Acme for" in line for line in before.heard), before.heard

    changed = client.patch(
        "/v1/projects/acme",
        json={"display_name": "Acme Tickets", "require_postal_code": True},
        headers={"Authorization": merchant["live"]},
    )
    assert changed.status_code == 200
    created = new_session()
    result = phone(to=created["sip_uri"]).call(
        ScriptedKeypad([APPROVED + "#", EXPIRY, CVV, "94107#", "1"])
    )

    assert any("secure payment to Acme Tickets for" in line for line in result.heard)
    zip_prompt = (
        "Please enter your billing ZIP code, five or nine digits, followed by the pound key. "
        "The keypad takes digits only."
    )
    assert zip_prompt in result.heard
    assert read_session(created["session_id"])["status"] == "payment-success"


def test_a_declined_card_can_be_replaced_by_another(
    new_session: Callable[..., dict[str, Any]],
    phone: Callable[..., Phone],
    read_session: Callable[[str], dict[str, Any]],
    services: Services,
    gateway_calls: list[str],
) -> None:
    created = new_session(callback=PHONE_CALLBACK)
    result = phone(to=created["sip_uri"]).call(
        ScriptedKeypad(
            [
                DECLINED + "#",
                EXPIRY,
                CVV,
                "1",
                "1",  # try another card
                APPROVED + "#",
                EXPIRY,
                CVV,
                "1",
            ]
        )
    )

    assert "The card was declined by the bank." in result.heard
    assert read_session(created["session_id"])["status"] == "payment-success"
    assert attempt_rows(services, created["session_id"]) == [(1, "declined"), (2, "succeeded")]
    assert len(gateway_calls) == 2


def test_a_card_over_its_failure_limit_is_refused_before_the_gateway_and_the_caller_hears_why(
    new_session: Callable[..., dict[str, Any]],
    phone: Callable[..., Phone],
    read_session: Callable[[str], dict[str, Any]],
    services: Services,
    gateway_calls: list[str],
) -> None:
    services.settings = services.settings.model_copy(update={"card_failure_limit": 1})
    first = new_session(callback=PHONE_CALLBACK)
    phone(to=first["sip_uri"]).call(ScriptedKeypad([DECLINED + "#", EXPIRY, CVV, "1", "2"]))
    second = new_session(callback=PHONE_CALLBACK)
    result = phone(to=second["sip_uri"]).call(
        ScriptedKeypad([DECLINED + "#", EXPIRY, CVV, "1", "2"])
    )

    assert len(gateway_calls) == 1, "the locked card never reached the gateway again"
    assert any("Too many payments with this card" in line for line in result.heard), result.heard
    session = read_session(second["session_id"])
    assert session["status"] == "payment-failed"
    assert session["error"]["code"] == "velocity_limited"
    assert result.dialed == [PHONE_CALLBACK]


def test_a_caller_who_gives_up_after_a_decline_ends_payment_failed(
    new_session: Callable[..., dict[str, Any]],
    phone: Callable[..., Phone],
    read_session: Callable[[str], dict[str, Any]],
) -> None:
    created = new_session(callback=SIP_CALLBACK)
    result = phone(to=created["sip_uri"]).call(
        ScriptedKeypad([DECLINED + "#", EXPIRY, CVV, "1", "2"])
    )

    session = read_session(created["session_id"])
    assert session["status"] == "payment-failed"
    assert session["error"]["code"] == "card_declined"
    assert sip_headers(result.dialed[0])[STATUS] == "payment-failed"
    assert not result.succeeded


def test_hanging_up_mid_card_abandons_the_session_and_destroys_the_card(
    new_session: Callable[..., dict[str, Any]],
    phone: Callable[..., Phone],
    read_session: Callable[[str], dict[str, Any]],
    services: Services,
) -> None:
    created = new_session()
    call = phone(to=created["sip_uri"])
    result = call.call(ScriptedKeypad([APPROVED + "#", EXPIRY, None]))

    assert result.caller_hung_up
    assert read_session(created["session_id"])["status"] == "abandoned"
    assert services.callstates.get(call.call_sid) is None
    assert services.callstates.take_card(call.call_sid) is None
    assert attempt_rows(services, created["session_id"]) == []


def _enter_until_confirm(call: Phone, created: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """Key a card up to the confirmation; returns the confirm webhook (url, form) unsent."""
    reply = call.post(f"{PUBLIC_URL}/twilio/voice", status="ringing")
    for keys in (APPROVED, EXPIRY, CVV):
        action = twiml(reply.body).find("Gather")
        assert action is not None
        reply = call.post(action.get("action", ""), {"Digits": keys, "FinishedOnKey": "#"})
    gather = twiml(reply.body).find("Gather")
    assert gather is not None and gather.get("action", "").endswith("step=confirm")
    return gather.get("action", ""), {"Digits": "1", "FinishedOnKey": ""}


def _hold_until_result(
    call: Phone, reply_body: str, services: CallServices | None = None
) -> list[str]:
    """Follow the hold redirects until the result; what the caller heard. With `services`, the
    first poll waits until the payment job in its thread has answered: back-to-back polls,
    without Twilio's pauses, could otherwise reach the hold limit first."""
    if services is not None:
        assert eventually(lambda: _answered(services, call.call_sid))
    heard: list[str] = []
    for _ in range(200):
        root = twiml(reply_body)
        heard += [(say.text or "") for say in root.iter("Say")]
        redirect = root.find("Redirect")
        if redirect is None:
            return heard
        reply_body = call.post(redirect.text or "").body
    raise AssertionError("the caller held forever")


def _answered(services: CallServices, call_sid: str) -> bool:
    live = services.callstates.load(call_sid)
    return live is not None and live.answered is not None


def test_a_confirmation_twilio_delivers_twice_charges_once(
    new_session: Callable[..., dict[str, Any]],
    phone: Callable[..., Phone],
    read_session: Callable[[str], dict[str, Any]],
    services: CallServices,
    gateway_calls: list[str],
) -> None:
    created = new_session()
    call = phone(to=created["sip_uri"])
    url, form = _enter_until_confirm(call, created)

    first, second = call.post(url, form), call.post(url, form)

    for reply in (first, second):
        assert twiml(reply.body).find("Redirect") is not None  # both hear the hold message
    heard = _hold_until_result(call, second.body, services)
    assert "Your payment was approved." in heard
    assert read_session(created["session_id"])["status"] == "payment-success"
    assert gateway_calls == [f"pd-{created['session_id']}-1"]
    assert attempt_rows(services, created["session_id"]) == [(1, "succeeded")]


def test_ten_simultaneous_deliveries_of_a_confirmation_make_one_gateway_call(
    app: Flask,
    new_session: Callable[..., dict[str, Any]],
    read_session: Callable[[str], dict[str, Any]],
    services: CallServices,
    gateway_calls: list[str],
) -> None:
    created = new_session()
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        call = phone_over(
            http_transport(f"http://127.0.0.1:{server.server_port}"), to=created["sip_uri"]
        )
        url, form = _enter_until_confirm(call, created)
        start = threading.Barrier(10)

        def deliver() -> str:
            start.wait()
            return call.post(url, form).body

        with ThreadPoolExecutor(10) as pool:
            bodies = list(pool.map(lambda _: deliver(), range(10)))
        assert all(twiml(body).find("Redirect") is not None for body in bodies)
        assert "Your payment was approved." in _hold_until_result(call, bodies[0], services)
    finally:
        server.shutdown()
    assert len(gateway_calls) == 1
    assert read_session(created["session_id"])["status"] == "payment-success"
    with services.db.transaction() as tx:
        assert tx.scalar(select(func.count()).select_from(PaymentAttempt)) == 1


def test_unicode_and_quotes_in_memory_reach_a_sip_agent_intact(
    new_session: Callable[..., dict[str, Any]],
    phone: Callable[..., Phone],
) -> None:
    memory = 'Zoë "VIP"'  # well within the room the headers and signature leave
    created = new_session(callback=SIP_CALLBACK, memory=memory)
    result = phone(to=created["sip_uri"]).call(ScriptedKeypad([APPROVED + "#", EXPIRY, CVV, "1"]))

    [dialed] = result.dialed
    assert len(dialed) <= 255
    headers = sip_headers(dialed)
    assert headers[MEMORY] == memory
    assert verify(headers, signing_key(TEST_SECRET_KEY))


def test_a_long_memory_travels_as_its_start_and_a_reference_the_agent_can_fetch(
    new_session: Callable[..., dict[str, Any]],
    phone: Callable[..., Phone],
    read_session: Callable[[str], dict[str, Any]],
) -> None:
    memory = ('Caller "Zoë" said: ' + "ünïcode ✓ " * 200)[:2000]
    created = new_session(callback=SIP_CALLBACK, memory=memory)
    result = phone(to=created["sip_uri"]).call(ScriptedKeypad([APPROVED + "#", EXPIRY, CVV, "1"]))

    headers = sip_headers(result.dialed[0])
    assert memory.startswith(headers[MEMORY]) and headers[MEMORY].startswith('Caller "Zo')
    assert headers[MEMORY_REF] == "2000"
    assert verify(headers, signing_key(TEST_SECRET_KEY))
    assert read_session(headers[SESSION])["memory"] == memory


@pytest.mark.parametrize("call_backend", ["redis-rq"], indirect=True)
def test_with_redis_a_worker_runs_the_payment_from_a_job_without_card_data(
    new_session: Callable[..., dict[str, Any]],
    phone: Callable[..., Phone],
    read_session: Callable[[str], dict[str, Any]],
    services: Services,
) -> None:
    from rq import Queue

    from ivr.charge import run_payment_job
    from payments.jobs import PAYMENT_QUEUE, run_worker

    created = new_session()
    call = phone(to=created["sip_uri"])
    url, form = _enter_until_confirm(call, created)
    hold = call.post(url, form).body

    [job] = Queue(PAYMENT_QUEUE, connection=redis.Redis.from_url(REDIS_TEST_URL)).get_jobs()
    assert job.args == (created["session_id"], 1, call.call_sid) and job.kwargs == {}
    assert read_session(created["session_id"])["status"] == "collecting"
    run_worker(services, {}, pay=run_payment_job, burst=True)

    assert "Your payment was approved." in _hold_until_result(call, hold)
    assert read_session(created["session_id"])["status"] == "payment-success"
