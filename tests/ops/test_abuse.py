"""Abuse controls: card testing and caller lockouts across sessions, toll-fraud callbacks."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from gateways.base import Card
from payments.accounts import get_project_by_slug
from payments.attempts import pay
from payments.model import Channel, Environment, Gateway, PaymentMode
from payments.services import Services
from payments.sessions import NewSession, create_session
from payments.store import PaymentAttempt, VelocityEvent
from payments.velocity import CallerLockedOut, CardLocked, caller_lockout
from tests.conftest import set_project

WRONG_CVC_CARD = "4000000000000127"  # the simulator declines it: wrong security code


def chat_session(services: Services, account_id: str) -> str:
    with services.db.transaction() as tx:
        return create_session(
            tx,
            account_id=account_id,
            environment=Environment.TEST,
            now=services.clock(),
            new=NewSession(
                project="acme",
                amount_cents=500,
                mode=PaymentMode.CHARGE,
                gateway=Gateway.STRIPE,
                channel=Channel.CHAT,
                ttl=timedelta(minutes=5),
            ),
        ).id


@pytest.fixture
def account_id(services: Services, merchant: dict[str, str]) -> str:
    with services.db.transaction() as tx:
        return get_project_by_slug(tx, "acme").account_id


def test_a_thousand_security_codes_for_one_card_are_stopped_across_sessions(
    services: Services, account_id: str
) -> None:
    limit = services.settings.card_failure_limit
    declined = locked = 0
    session_id = chat_session(services, account_id)
    for guess in range(1000):
        card = Card(number=WRONG_CVC_CARD, exp_month=12, exp_year=2030, cvc=f"{guess:03d}")
        try:
            outcome = pay(services, session_id, card)
        except CardLocked as error:
            locked += 1
            assert error.retry_after > 0
            continue
        declined += 1
        assert outcome.error_code == "incorrect_cvc"
        if outcome.attempts_remaining == 0:
            session_id = chat_session(services, account_id)
    assert (declined, locked) == (limit, 1000 - limit)
    with services.db.transaction() as tx:
        assert tx.scalar(select(func.count()).select_from(PaymentAttempt)) == limit
        subjects = tx.scalars(select(VelocityEvent.subject)).all()
    assert all(WRONG_CVC_CARD not in subject for subject in subjects)

    services.clock.advance(hours=services.settings.velocity_window_hours)  # type: ignore[attr-defined]
    outcome = pay(
        services,
        chat_session(services, account_id),
        Card(number=WRONG_CVC_CARD, exp_month=12, exp_year=2030, cvc="999"),
    )
    assert outcome.error_code == "incorrect_cvc"  # the window passed: the card may try again


def test_a_caller_is_locked_out_after_repeated_failures_with_different_cards(
    services: Services, new_session: Callable[..., str]
) -> None:
    declining = ["4000000000000002", "4000000000009995", "4000000000000069"]
    for n in range(services.settings.caller_failure_limit):
        card = Card(number=declining[n % 3], exp_month=12, exp_year=2030, cvc="123")
        pay(services, new_session(), card)
    with pytest.raises(CallerLockedOut) as locked:
        pay(
            services,
            new_session(),
            Card(number="4242424242424242", exp_month=12, exp_year=2030, cvc="123"),
        )
    assert "phone number" in str(locked.value)
    with services.db.transaction() as tx:
        now = services.clock()
        assert caller_lockout(tx, services, ["+14155550100"], now=now) is not None
        assert caller_lockout(tx, services, ["+14155550199"], now=now) is None  # another caller


def test_a_locked_out_payment_answers_429_with_retry_after_at_the_edge(
    services: Services, account_id: str, client: FlaskClient, merchant: dict[str, str]
) -> None:
    app: Flask = client.application
    app.add_url_rule(
        "/probe/<session_id>",
        "probe",
        lambda session_id: str(
            pay(
                services,
                session_id,
                Card(number=WRONG_CVC_CARD, exp_month=12, exp_year=2030, cvc="111"),
            )
        ),
    )
    for _ in range(services.settings.card_failure_limit):
        client.get(f"/probe/{chat_session(services, account_id)}")
    response = client.get(f"/probe/{chat_session(services, account_id)}")
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) > 0
    assert "too many failed attempts" in response.get_json()["detail"]


@pytest.mark.parametrize(
    ("callback", "kind"),
    [
        ("+19005551234", "callback_number_type"),  # US premium rate
        ("+448712345678", "callback_number_type"),  # UK shared cost / premium
        ("+33891234567", "callback_number_type"),  # FR premium rate
        ("+442079460000", "callback_country"),  # an ordinary London number, but not allowed
    ],
)
def test_a_toll_fraud_callback_is_rejected_at_creation(
    client: FlaskClient, merchant: dict[str, str], callback: str, kind: str
) -> None:
    response = client.post(
        "/v1/sessions",
        json={
            "project": "acme",
            "caller": "+14155550100",
            "amount": "10.00",
            "mode": "charge",
            "gateway": "stripe",
            "callback": callback,
        },
        headers={"Authorization": merchant["test"]},
    )
    assert response.status_code == 422
    [error] = response.get_json()["detail"]
    assert error["loc"] == ["body", "callback"] and error["type"] == kind


def test_callbacks_in_allowed_countries_are_accepted_and_the_list_is_per_project(
    services: Services, client: FlaskClient, merchant: dict[str, str]
) -> None:
    body = {
        "project": "acme",
        "caller": "+14155550100",
        "amount": "10.00",
        "mode": "charge",
        "gateway": "stripe",
    }
    auth = {"Authorization": merchant["test"]}
    for callback in ("+16135550100", "+14155550123", "sip:agent@pbx.example.com"):
        assert (
            client.post(
                "/v1/sessions", json=body | {"callback": callback}, headers=auth
            ).status_code
            == 201
        )
    set_project(services, "acme", callback_countries=["GB"])
    assert (
        client.post(
            "/v1/sessions", json=body | {"callback": "+442079460000"}, headers=auth
        ).status_code
        == 201
    )
    assert (
        client.post(
            "/v1/sessions", json=body | {"callback": "+16135550100"}, headers=auth
        ).status_code
        == 422
    )
