"""Idempotency-Key: same key and body replay the first answer; another body is a 409."""

from __future__ import annotations

import json

import pytest
from flask.testing import FlaskClient

from api.idempotency import purge_expired
from payments.services import Services
from tests.conftest import Clock

BODY = {
    "project": "acme",
    "caller": "+14155552671",
    "amount": 5,
    "mode": "charge",
    "gateway": "braintree",
}


def post(
    client: FlaskClient, auth: str, key: str | None, body: object = BODY, path: str = "/v1/sessions"
):  # type: ignore[no-untyped-def]
    headers = {"Authorization": auth}
    if key is not None:
        headers["Idempotency-Key"] = key
    return client.post(path, json=body, headers=headers)


def test_the_same_key_and_body_replays_the_first_response(
    client: FlaskClient, merchant: dict[str, str], clock: Clock
) -> None:
    first = post(client, merchant["test"], "order-1")
    clock.advance(minutes=5)
    second = post(client, merchant["test"], "order-1")
    assert first.status_code == second.status_code == 201
    assert second.json == first.json
    assert second.headers["Idempotent-Replayed"] == "true"
    third = post(client, merchant["test"], "order-2")
    assert third.json["session_id"] != first.json["session_id"]


def test_the_same_key_with_another_body_is_a_conflict(
    client: FlaskClient, merchant: dict[str, str]
) -> None:
    post(client, merchant["test"], "order-1")
    response = post(client, merchant["test"], "order-1", {**BODY, "amount": 6})
    assert response.status_code == 409
    assert "different request" in response.json["detail"]


@pytest.mark.parametrize(
    "same_meaning",
    [
        '{"gateway":"braintree","mode":"charge","amount":5,"caller":"+14155552671","project":"acme"}',
        '{ "project" : "acme",\n "caller": "+14155552671", "amount": 5.00,'
        ' "mode": "charge", "gateway": "braintree" }',
        json.dumps({**BODY, "amount": "5.00"}),
        json.dumps({**BODY, "amount": "5"}),
        json.dumps({**BODY, "description": None, "billing_address": None}),  # the defaults
    ],
)
def test_the_same_request_written_differently_replays_the_first_response(
    client: FlaskClient, merchant: dict[str, str], same_meaning: str
) -> None:
    first = post(client, merchant["test"], "order-1")
    second = client.post(
        "/v1/sessions",
        data=same_meaning,
        content_type="application/json",
        headers={"Authorization": merchant["test"], "Idempotency-Key": "order-1"},
    )
    assert second.status_code == 201, second.json
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.json == first.json


@pytest.mark.parametrize(
    "other_meaning",
    [{"amount": "5.01"}, {"memory": ""}, {"mode": "tokenize"}, {"callback": "+16135550123"}],
)
def test_a_request_that_means_something_else_is_still_a_conflict(
    client: FlaskClient, merchant: dict[str, str], other_meaning: dict[str, str]
) -> None:
    post(client, merchant["test"], "order-1")
    assert post(client, merchant["test"], "order-1", {**BODY, **other_meaning}).status_code == 409


def test_a_validation_failure_is_not_remembered(
    client: FlaskClient, merchant: dict[str, str]
) -> None:
    assert post(client, merchant["test"], "k", {**BODY, "amount": -1}).status_code == 422
    assert post(client, merchant["test"], "k").status_code == 201


def test_keys_are_scoped_to_the_account_and_mode(
    client: FlaskClient,
    live_merchant: dict[str, str],
    make_project,
    make_key,  # type: ignore[no-untyped-def]
) -> None:
    make_project("rival", "Rival")
    merchant = live_merchant
    test_one = post(client, merchant["test"], "same")
    live_one = post(client, merchant["live"], "same")
    rival_one = post(client, f"Bearer {make_key('rival')}", "same", {**BODY, "project": "rival"})
    ids = {r.json["session_id"] for r in (test_one, live_one, rival_one)}
    assert len(ids) == 3


def test_cancel_replays_its_204(client: FlaskClient, merchant: dict[str, str]) -> None:
    session_id = post(client, merchant["test"], None).json["session_id"]
    path = f"/v1/sessions/{session_id}/cancel"
    first = client.post(path, headers={"Authorization": merchant["test"], "Idempotency-Key": "c"})
    second = client.post(path, headers={"Authorization": merchant["test"], "Idempotency-Key": "c"})
    without = client.post(path, headers={"Authorization": merchant["test"]})
    assert (first.status_code, second.status_code, without.status_code) == (204, 204, 409)


def test_widget_session_creation_is_idempotent_too(
    client: FlaskClient, merchant: dict[str, str]
) -> None:
    body = {"project": "acme", "amount_cents": 500, "gateway": "stripe"}
    first = post(client, merchant["test"], "w", body, "/v1/widget-sessions")
    second = post(client, merchant["test"], "w", body, "/v1/widget-sessions")
    assert first.status_code == 201 and second.json == first.json


def test_keys_are_forgotten_after_24_hours(
    client: FlaskClient, merchant: dict[str, str], services: Services, clock: Clock
) -> None:
    first = post(client, merchant["test"], "daily")
    clock.advance(hours=24, seconds=1)
    second = post(client, merchant["test"], "daily")
    assert second.status_code == 201 and second.json["session_id"] != first.json["session_id"]
    clock.advance(hours=25)
    with services.db.transaction() as tx:
        assert purge_expired(tx, clock()) == 1


def test_an_overlong_key_is_a_422(client: FlaskClient, merchant: dict[str, str]) -> None:
    response = post(client, merchant["test"], "k" * 256)
    assert response.status_code == 422
    assert response.json["detail"][0]["loc"] == ["header", "Idempotency-Key"]


def test_concurrent_requests_with_one_key_create_one_session(
    app,
    merchant: dict[str, str],
    services: Services,  # type: ignore[no-untyped-def]
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from sqlalchemy import func, select

    from payments.store import PaymentSession

    def attempt(_: int) -> int:
        with app.test_client() as client:
            return post(client, merchant["test"], "race").status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(attempt, range(8)))
    assert set(statuses) <= {201, 409} and 201 in statuses
    with services.db.transaction() as tx:
        assert tx.scalar(select(func.count()).select_from(PaymentSession)) == 1
