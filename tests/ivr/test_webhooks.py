"""The /twilio/* edge: signatures, status callbacks, the fallback, the Dial action, repeats."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient
from twilio.request_validator import RequestValidator

from ivr.phone import Phone, ScriptedKeypad
from payments import logs
from payments.services import Services
from payments.sessions import CALL_BOUND
from tests.conftest import PUBLIC_URL, TEST_TWILIO_TOKEN, Clock
from tests.ivr.conftest import APPROVED, CVV, EXPIRY
from tests.ivr.twilio_client import twiml

CARD = [APPROVED + "#", EXPIRY, CVV, "1"]
CALL = {
    "CallSid": "CA0123456789abcdef0123456789abcdef",
    "AccountSid": "AC1",
    "From": "+14155550100",
    "CallStatus": "ringing",
    "Direction": "inbound",
    "ApiVersion": "2010-04-01",
}


@pytest.fixture
def call_backend() -> str:
    """The edge does not depend on where call state lives: the embedded setup is enough."""
    return "memory-threads"


def _signed(url: str, form: dict[str, str]) -> str:
    return RequestValidator(TEST_TWILIO_TOKEN).compute_signature(url, form)


@pytest.mark.parametrize("signature", ["", "bm90IGEgc2lnbmF0dXJl", "request-url"])
def test_a_webhook_without_a_valid_signature_is_refused_and_changes_nothing(
    signature: str,
    client: FlaskClient,
    new_session: Callable[..., dict[str, Any]],
    read_session: Callable[[str], dict[str, Any]],
    services: Services,
) -> None:
    created = new_session()
    form = {**CALL, "To": created["sip_uri"]}
    if signature == "request-url":  # signed for the URL the app sees, not the public one
        signature = _signed("http://localhost/twilio/voice", form)
    headers = {"X-Twilio-Signature": signature} if signature else {}

    response = client.post("/twilio/voice", data=form, headers=headers)

    assert response.status_code == 403
    session = read_session(created["session_id"])
    assert session["status"] == "pending"
    assert services.callstates.get(CALL["CallSid"]) is None


def test_the_signature_covers_the_query_string_and_every_parameter(
    client: FlaskClient,
    new_session: Callable[..., dict[str, Any]],
) -> None:
    created = new_session()
    form = {**CALL, "To": created["sip_uri"]}
    url = f"{PUBLIC_URL}/twilio/voice?attempt=1"

    tampered = client.post(
        "/twilio/voice?attempt=1",
        data={**form, "From": "+19999999999"},
        headers={"X-Twilio-Signature": _signed(url, form)},
    )
    other_query = client.post(
        "/twilio/voice?attempt=2", data=form, headers={"X-Twilio-Signature": _signed(url, form)}
    )
    genuine = client.post(
        "/twilio/voice?attempt=1", data=form, headers={"X-Twilio-Signature": _signed(url, form)}
    )

    assert (tampered.status_code, other_query.status_code, genuine.status_code) == (403, 403, 200)
    assert genuine.mimetype == "text/xml"
    assert twiml(genuine.get_data(as_text=True)).find("Gather") is not None


def test_a_genuine_webhook_has_its_signature_computed_once(
    client: FlaskClient,
    new_session: Callable[..., dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    created = new_session()
    form = {**CALL, "To": created["sip_uri"]}
    url = f"{PUBLIC_URL}/twilio/voice"
    signature = _signed(url, form)
    computed: list[str] = []
    compute = RequestValidator.compute_signature

    def counted(self: RequestValidator, uri: str, params: Any, algorithm: Any = None) -> str:
        computed.append(uri)
        return compute(self, uri, params, algorithm)

    monkeypatch.setattr(RequestValidator, "compute_signature", counted)
    response = client.post("/twilio/voice", data=form, headers={"X-Twilio-Signature": signature})

    assert response.status_code == 200
    assert computed == [url]


def test_a_repeated_voice_webhook_repeats_the_prompt_without_losing_progress(
    new_session: Callable[..., dict[str, Any]],
    phone: Callable[..., Phone],
) -> None:
    created = new_session()
    call = phone(to=created["sip_uri"])
    call.post(f"{PUBLIC_URL}/twilio/voice", status="ringing")
    call.post(
        f"{PUBLIC_URL}/twilio/gather?step=card_number", {"Digits": APPROVED, "FinishedOnKey": "#"}
    )

    again = twiml(call.post(f"{PUBLIC_URL}/twilio/voice", status="ringing").body)
    stale = twiml(
        call.post(
            f"{PUBLIC_URL}/twilio/gather?step=card_number",
            {"Digits": APPROVED, "FinishedOnKey": "#"},
        ).body
    )

    for root in (again, stale):
        gather = root.find("Gather")
        assert gather is not None and gather.get("action", "").endswith("step=expiry")


def test_a_late_status_callback_never_changes_a_finished_session(
    new_session: Callable[..., dict[str, Any]],
    phone: Callable[..., Phone],
    read_session: Callable[[str], dict[str, Any]],
) -> None:
    created = new_session()
    call = phone(to=created["sip_uri"])
    assert call.call(ScriptedKeypad(CARD)).succeeded

    for status in ("completed", "failed", "canceled"):
        assert call.post(f"{PUBLIC_URL}/twilio/status", status=status).status == 200
    assert read_session(created["session_id"])["status"] == "payment-success"


@pytest.mark.parametrize("ended", ["completed", "busy", "failed", "no-answer", "canceled"])
def test_a_call_that_ends_before_a_result_abandons_its_session(
    ended: str,
    new_session: Callable[..., dict[str, Any]],
    phone: Callable[..., Phone],
    read_session: Callable[[str], dict[str, Any]],
    services: Services,
) -> None:
    created = new_session()
    call = phone(to=created["sip_uri"])
    call.post(f"{PUBLIC_URL}/twilio/voice", status="ringing")
    call.post(
        f"{PUBLIC_URL}/twilio/gather?step=card_number", {"Digits": APPROVED, "FinishedOnKey": "#"}
    )

    call.post(f"{PUBLIC_URL}/twilio/status", status="in-progress")
    assert read_session(created["session_id"])["status"] == "collecting"
    call.post(f"{PUBLIC_URL}/twilio/status", status=ended)

    assert read_session(created["session_id"])["status"] == "abandoned"
    assert services.callstates.get(call.call_sid) is None


@pytest.mark.parametrize("callback", [None, "+14155550199"])
def test_the_fallback_apologises_hands_back_and_records_the_error(
    callback: str | None,
    new_session: Callable[..., dict[str, Any]],
    phone: Callable[..., Phone],
    services: Services,
    caplog: pytest.LogCaptureFixture,
) -> None:
    created = new_session(callback=callback)
    call = phone(to=created["sip_uri"])
    call.post(f"{PUBLIC_URL}/twilio/voice", status="ringing")
    caplog.set_level(logging.WARNING)
    caplog.handler.addFilter(logs.AddContext())  # the session tag production handlers add

    reply = call.post(
        f"{PUBLIC_URL}/twilio/fallback",
        {
            "ErrorCode": "11200",
            "ErrorUrl": f"{PUBLIC_URL}/twilio/gather?step=card_number",
        },
    )

    root = twiml(reply.body)
    assert [say.text for say in root.iter("Say")] == [
        "We are sorry, something went wrong on our side."
    ]
    number = root.find("Dial/Number")
    if callback is None:
        assert number is None and root.find("Hangup") is not None
    else:
        assert number is not None and number.text == callback
    assert "11200" in caplog.text and "step=card_number" in caplog.text
    [fallback_line] = [r for r in caplog.records if "twilio fallback" in r.getMessage()]
    assert fallback_line.session_id == created["session_id"]  # type: ignore[attr-defined]
    assert services.callstates.get(call.call_sid) is None


def test_the_dial_action_records_how_the_transfer_went(
    new_session: Callable[..., dict[str, Any]],
    phone: Callable[..., Phone],
    read_session: Callable[[str], dict[str, Any]],
) -> None:
    created = new_session(callback="+14155550199")
    call = phone(to=created["sip_uri"])
    call.call(ScriptedKeypad(CARD))

    reply = call.post(f"{PUBLIC_URL}/twilio/dial", {"DialCallStatus": "busy"})

    assert twiml(reply.body).find("Hangup") is not None
    assert read_session(created["session_id"])["transfer_status"] == "busy"


def test_a_dial_action_after_the_sessions_time_records_the_transfer_and_closes_the_session(
    new_session: Callable[..., dict[str, Any]],
    phone: Callable[..., Phone],
    read_session: Callable[[str], dict[str, Any]],
    clock: Clock,
) -> None:
    created = new_session(callback="+14155550199")
    call = phone(to=created["sip_uri"])
    call.post(f"{PUBLIC_URL}/twilio/voice")  # bound, then the caller stays on the line for long
    clock.advance(seconds=CALL_BOUND.total_seconds() + 1)

    reply = call.post(f"{PUBLIC_URL}/twilio/dial", {"DialCallStatus": "completed"})

    assert reply.headers["X-Paydial-Status"] == "abandoned"
    session = read_session(created["session_id"])
    assert (session["status"], session["transfer_status"]) == ("abandoned", "completed")


def test_an_unbound_call_is_asked_for_its_access_code(client: FlaskClient) -> None:
    form = {**CALL, "To": "+15005550006", "From": "+14155550999"}
    response = client.post(
        "/twilio/voice",
        data=form,
        headers={
            "X-Twilio-Signature": _signed(f"{PUBLIC_URL}/twilio/voice", form),
        },
    )

    gather = twiml(response.get_data(as_text=True)).find("Gather")
    assert gather is not None
    assert gather.get("action") == f"{PUBLIC_URL}/twilio/gather?step=access_code"
    assert gather.get("numDigits") == "6"
