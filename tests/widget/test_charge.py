"""POST /v1/widget-sessions/{id}/charge: the frame's only way to move money."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient
from pydantic import ValidationError
from werkzeug.test import TestResponse

from api.schemas import ChargeRequest
from payments.model import Channel
from payments.services import Services
from tests.conftest import TEST_SECRET_KEY, Clock, set_project
from tests.widget.conftest import APPROVED, DECLINED, frame_csrf

GOOD_CARD = {"card_number": APPROVED, "exp_month": 12, "exp_year": 2030, "cvc": "123"}


def charge(
    client: FlaskClient, session_id: str, body: dict[str, Any], token: str | None
) -> TestResponse:
    headers = {} if token is None else {"X-Paydial-CSRF": token}
    return client.post(f"/v1/widget-sessions/{session_id}/charge", json=body, headers=headers)


def status_of(client: FlaskClient, session_id: str) -> str:
    status: str = client.get(f"/v1/widget-sessions/{session_id}").get_json()["status"]
    return status


def test_a_valid_card_is_charged_and_the_result_names_the_card(
    client: FlaskClient, make_widget_session: Callable[..., str]
) -> None:
    sid = make_widget_session(amount_cents=1250)
    response = charge(client, sid, GOOD_CARD, frame_csrf(client, sid))
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == {
        "transaction_id",
        "confirmation_code",
        "card_brand",
        "card_last4",
        "amount_cents",
        "currency",
        "status",
    }
    assert body["transaction_id"]
    assert re.fullmatch(r"[1-9]\d{7}", body["confirmation_code"])
    assert (body["card_brand"], body["card_last4"]) == ("visa", "4242")
    assert body["amount_cents"] == 1250
    assert (body["currency"], body["status"]) == ("usd", "payment-success")
    assert status_of(client, sid) == "payment-success"


def test_a_declined_card_is_a_402_and_another_card_may_follow(
    client: FlaskClient, make_widget_session: Callable[..., str]
) -> None:
    sid = make_widget_session()
    token = frame_csrf(client, sid)
    declined = charge(client, sid, GOOD_CARD | {"card_number": DECLINED}, token)
    assert declined.status_code == 402
    assert declined.get_json() == {
        "error_code": "card_declined",
        "error_message": "The card was declined.",
        "attempts_remaining": 2,
        "status": "collecting",
    }
    assert charge(client, sid, GOOD_CARD, token).status_code == 200


def test_the_last_allowed_decline_fails_the_session_and_refuses_more_attempts(
    client: FlaskClient, make_widget_session: Callable[..., str]
) -> None:
    sid = make_widget_session()
    token = frame_csrf(client, sid)
    bad = GOOD_CARD | {"card_number": DECLINED}
    answers = [charge(client, sid, bad, token) for _ in range(3)]
    assert [a.status_code for a in answers] == [402, 402, 402]
    assert answers[-1].get_json()["attempts_remaining"] == 0
    assert answers[-1].get_json()["status"] == "payment-failed"
    assert charge(client, sid, GOOD_CARD, token).status_code == 409


@pytest.mark.parametrize(
    ("change", "loc", "kind"),
    [
        ({"card_number": "4242424242424241"}, "card_number", "luhn"),
        ({"card_number": "42424242"}, "card_number", "string_pattern_mismatch"),
        ({"exp_month": 13}, "exp_month", "less_than_equal"),
        ({"exp_month": 10, "exp_year": 2026}, "exp_month", "card-expired"),
        ({"cvc": "12"}, "cvc", "string_pattern_mismatch"),
        ({"cvc": "1234"}, "cvc", "invalid-security-code"),
        ({"postal_code": "1234"}, "postal_code", "invalid-postal-code"),
        ({"card_number": "6011000990139424"}, "card_number", "card-type-not-accepted"),
        ({"pin": "1234"}, "pin", "extra_forbidden"),
    ],
)
def test_an_invalid_card_is_a_422_naming_the_field_and_nothing_is_charged(
    client: FlaskClient,
    services: Services,
    make_widget_session: Callable[..., str],
    change: dict[str, Any],
    loc: str,
    kind: str,
) -> None:
    sid = make_widget_session()
    set_project(services, "shop", accepted_brands=["visa", "mastercard", "amex"])
    response = charge(client, sid, GOOD_CARD | change, frame_csrf(client, sid))
    assert response.status_code == 422
    assert {"loc": ["body", loc], "type": kind} in [
        {"loc": e["loc"], "type": e["type"]} for e in response.get_json()["detail"]
    ]
    assert str(change.get("card_number", APPROVED)) not in response.get_data(as_text=True)
    assert status_of(client, sid) == "pending"


def test_an_amex_card_needs_a_four_digit_security_code(
    client: FlaskClient, make_widget_session: Callable[..., str]
) -> None:
    sid = make_widget_session()
    token = frame_csrf(client, sid)
    amex = {"card_number": "378282246310005", "exp_month": 1, "exp_year": 2031}
    refused = charge(client, sid, amex | {"cvc": "123"}, token)
    assert refused.status_code == 422
    assert refused.get_json()["detail"][0]["loc"] == ["body", "cvc"]
    approved = charge(client, sid, amex | {"cvc": "1234"}, token)
    assert approved.get_json()["card_brand"] == "amex"


def test_a_project_that_requires_a_zip_refuses_a_charge_without_one(
    client: FlaskClient, services: Services, make_widget_session: Callable[..., str]
) -> None:
    sid = make_widget_session()
    set_project(services, "shop", require_postal_code=True)
    token = frame_csrf(client, sid)
    missing = charge(client, sid, GOOD_CARD, token)
    assert missing.status_code == 422
    assert missing.get_json()["detail"] == [
        {"loc": ["body", "postal_code"], "msg": "Field required", "type": "missing"}
    ]
    assert charge(client, sid, GOOD_CARD | {"postal_code": "94107-1234"}, token).status_code == 200


def test_a_body_that_is_not_json_is_a_422(
    client: FlaskClient, make_widget_session: Callable[..., str]
) -> None:
    sid = make_widget_session()
    response = client.post(
        f"/v1/widget-sessions/{sid}/charge",
        data="card_number=4242424242424242",
        headers={"X-Paydial-CSRF": frame_csrf(client, sid)},
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 422
    assert APPROVED not in response.get_data(as_text=True)


def test_an_expired_session_is_a_410(
    client: FlaskClient, clock: Clock, make_widget_session: Callable[..., str]
) -> None:
    sid = make_widget_session()
    token = frame_csrf(client, sid)
    clock.advance(minutes=5, seconds=1)
    response = charge(client, sid, GOOD_CARD, token)
    assert response.status_code == 410
    assert status_of(client, sid) == "expired"


def test_a_session_is_still_payable_just_before_five_minutes(
    client: FlaskClient, clock: Clock, make_widget_session: Callable[..., str]
) -> None:
    sid = make_widget_session()
    token = frame_csrf(client, sid)
    clock.advance(minutes=4, seconds=59)
    assert charge(client, sid, GOOD_CARD, token).status_code == 200


def test_a_second_charge_after_success_is_refused(
    client: FlaskClient, make_widget_session: Callable[..., str]
) -> None:
    sid = make_widget_session()
    token = frame_csrf(client, sid)
    assert charge(client, sid, GOOD_CARD, token).status_code == 200
    again = charge(client, sid, GOOD_CARD, token)
    assert again.status_code == 409
    assert "payment-success" in again.get_json()["detail"]


def test_a_charge_without_the_csrf_token_is_forbidden(
    client: FlaskClient, make_widget_session: Callable[..., str]
) -> None:
    sid = make_widget_session()
    assert charge(client, sid, GOOD_CARD, None).status_code == 403
    assert charge(client, sid, GOOD_CARD, "0" * 64).status_code == 403
    assert status_of(client, sid) == "pending"


def test_another_projects_session_cannot_be_charged_with_this_frames_token(
    client: FlaskClient, make_widget_session: Callable[..., str]
) -> None:
    mine = make_widget_session("shop")
    theirs = make_widget_session("rival")
    response = charge(client, theirs, GOOD_CARD, frame_csrf(client, mine))
    assert response.status_code == 403
    assert status_of(client, theirs) == "pending"


def test_an_unknown_session_is_a_404(client: FlaskClient) -> None:
    unknown = "00000000-0000-4000-8000-000000000000"
    token = hmac.new(
        TEST_SECRET_KEY.encode(), f"widget-csrf:{unknown}".encode(), hashlib.sha256
    ).hexdigest()
    assert charge(client, unknown, GOOD_CARD, token).status_code == 404


def test_a_voice_session_cannot_be_charged_through_the_widget(
    client: FlaskClient, make_widget_session: Callable[..., str]
) -> None:
    sid = make_widget_session(channel=Channel.VOICE)
    token = hmac.new(
        TEST_SECRET_KEY.encode(), f"widget-csrf:{sid}".encode(), hashlib.sha256
    ).hexdigest()
    assert charge(client, sid, GOOD_CARD, token).status_code == 404
    assert client.get(f"/v1/widget-sessions/{sid}").status_code == 404


def test_card_data_never_reaches_the_logs(
    client: FlaskClient,
    make_widget_session: Callable[..., str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    sid = make_widget_session()
    token = frame_csrf(client, sid)
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.INFO, logger="sqlalchemy.engine")  # every statement and its parameters
    charge(client, sid, GOOD_CARD | {"card_number": "4242424242424241"}, token)
    charge(client, sid, GOOD_CARD | {"card_number": DECLINED}, token)
    charge(client, sid, GOOD_CARD, token)
    assert any(r.name.startswith("sqlalchemy.engine") for r in caplog.records)
    for number in ("4242424242424241", DECLINED, APPROVED):
        assert number not in caplog.text


def test_a_charge_request_keeps_card_data_out_of_its_repr_and_errors() -> None:
    body = ChargeRequest.model_validate(GOOD_CARD | {"postal_code": "94107"})
    assert APPROVED not in repr(body) and "123" not in repr(body)
    with pytest.raises(ValidationError) as refused:
        ChargeRequest.model_validate(GOOD_CARD | {"card_number": "42424242424242x"})
    assert "42424242424242x" not in str(refused.value)


@pytest.mark.parametrize(
    ("countries", "typed", "accepted"),
    [
        (["US", "CA"], "K1A 0B1", True),
        (["US", "CA"], "k1a0b1", True),
        (["US", "CA"], "94107", True),
        (["US", "CA"], "94107-1234", True),
        (["US"], "K1A 0B1", False),
        (["CA"], "94107", False),
        (["US", "CA"], "K1A 0B", False),
    ],
)
def test_the_postal_code_takes_the_formats_of_the_projects_countries(
    client: FlaskClient,
    services: Services,
    make_widget_session: Callable[..., str],
    countries: list[str],
    typed: str,
    accepted: bool,
) -> None:
    sid = make_widget_session()
    set_project(services, "shop", callback_countries=countries, require_postal_code=True)
    response = charge(client, sid, GOOD_CARD | {"postal_code": typed}, frame_csrf(client, sid))
    if accepted:
        assert response.status_code == 200
        return
    assert response.status_code == 422
    described = {
        "US": "a US ZIP code (12345 or 12345-6789)",
        "CA": "a Canadian postal code (A1A 1A1)",
    }
    assert response.get_json()["detail"] == [
        {
            "loc": ["body", "postal_code"],
            "msg": f"Enter {' or '.join(described[c] for c in countries)}.",
            "type": "invalid-postal-code",
        }
    ]
