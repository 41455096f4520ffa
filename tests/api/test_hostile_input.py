"""Hostile input: NUL characters, impossible ids, booleans as amounts, and honest Retry-After."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy.exc import DBAPIError

from ivr.wiring import build_services
from payments import logs
from payments.services import Services
from payments.store import Database, PaymentSession
from tests.conftest import free_port, make_settings, tuned
from tests.ops.conftest import app_for

VOICE = {
    "project": "acme",
    "caller": "+14155552671",
    "amount": "12.50",
    "mode": "charge",
    "gateway": "stripe",
}
WIDGET = {"project": "acme", "amount_cents": 1250, "gateway": "stripe"}
NUL = "\x00"


def post(client: FlaskClient, path: str, key: str, body: dict[str, Any]) -> Any:
    return client.post(path, json=body, headers={"Authorization": key})


@pytest.mark.parametrize(
    ("path", "base", "field"),
    [
        ("/v1/sessions", VOICE, "description"),
        ("/v1/sessions", VOICE, "memory"),
        ("/v1/sessions", VOICE, "project"),
        ("/v1/widget-sessions", WIDGET, "description"),
        ("/v1/widget-sessions", WIDGET, "project"),
    ],
)
def test_a_nul_character_in_any_text_field_is_a_422_naming_the_field(
    client: FlaskClient,
    merchant: dict[str, str],
    path: str,
    base: dict[str, Any],
    field: str,
) -> None:
    response = post(client, path, merchant["test"], base | {field: f"VIP{NUL}caller"})
    assert response.status_code == 422, response.data
    assert response.json == {
        "detail": [
            {
                "loc": ["body", field],
                "msg": "Text must not contain NUL characters",
                "type": "string_nul",
            }
        ]
    }


def test_a_nul_character_in_a_nested_field_or_a_query_is_a_422(
    client: FlaskClient, merchant: dict[str, str]
) -> None:
    address = {"street": f"1 Main{NUL}", "city": "Austin", "state": "TX", "zip": "78701"}
    nested = post(client, "/v1/sessions", merchant["test"], VOICE | {"billing_address": address})
    assert nested.status_code == 422
    assert nested.json["detail"][0]["loc"] == ["body", "billing_address", "street"]
    query = client.get(
        "/v1/sessions?caller=%2B1415%00", headers={"Authorization": merchant["test"]}
    )
    assert query.status_code == 422
    assert query.json["detail"][0]["loc"] == ["query", "caller"]


@pytest.mark.parametrize(
    ("method", "path", "auth"),
    [
        ("GET", "/v1/sessions/abc%00def", True),
        ("POST", "/v1/sessions/abc%00def/cancel", True),
        ("GET", "/v1/widget-sessions/abc%00def", False),
        ("GET", "/widget/abc%00def", False),
        ("GET", f"/v1/widget-sessions/{'9' * 400}", False),  # (a session id is a 422: uuid)
    ],
)
def test_an_id_in_a_path_that_cannot_exist_is_a_404(
    client: FlaskClient, merchant: dict[str, str], method: str, path: str, auth: bool
) -> None:
    headers = {"Authorization": merchant["test"]} if auth else {}
    response = client.open(path, method=method, headers=headers)
    assert response.status_code == 404


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Everything the root logger writes while the test runs, through the app's filters."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    logs.install_filters(handler)
    root = logging.getLogger()
    root.addHandler(handler)
    yield buffer
    root.removeHandler(handler)


def test_a_database_error_and_its_logged_traceback_never_carry_the_sql_parameters(
    services: Services, captured: io.StringIO
) -> None:
    marker = "hostile-parameter-" + "x" * 40  # too long for the id column on PostgreSQL
    now = services.clock()
    try:
        with services.db.transaction() as tx:
            tx.add(
                PaymentSession(
                    id=marker,
                    account_id="missing",
                    project_id="missing",
                    environment="test",
                    channel="voice",
                    status="pending",
                    amount_cents=1,
                    currency="usd",
                    mode="charge",
                    gateway="stripe",
                    description=marker,
                    created_at=now,
                    updated_at=now,
                    expires_at=now + timedelta(minutes=1),
                )
            )
    except DBAPIError as error:
        logging.getLogger("paydial.test").error("insert failed", exc_info=error)
        assert marker not in str(error)
    else:
        pytest.fail("the insert should have failed (foreign keys, column length)")
    assert "insert failed" in captured.getvalue()
    assert marker not in captured.getvalue()


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/sessions", VOICE | {"amount": True}),
        ("/v1/sessions", VOICE | {"amount": False, "mode": "tokenize"}),
        ("/v1/widget-sessions", WIDGET | {"amount_cents": True}),
        ("/v1/widget-sessions", WIDGET | {"amount_cents": False, "mode": "tokenize"}),
        ("/v1/widget-sessions", WIDGET | {"amount_cents": "1250"}),
        ("/v1/widget-sessions", WIDGET | {"amount_cents": 12.0}),
    ],
)
def test_booleans_strings_and_floats_are_not_amounts_in_either_kind_of_session(
    client: FlaskClient, merchant: dict[str, str], path: str, body: dict[str, Any]
) -> None:
    response = post(client, path, merchant["test"], body)
    assert response.status_code == 422, response.json
    field = "amount" if path == "/v1/sessions" else "amount_cents"
    assert response.json["detail"][0]["loc"] == ["body", field]


def test_retry_after_is_only_on_429_and_503_each_with_its_own_value(
    client: FlaskClient, merchant: dict[str, str], services: Services
) -> None:
    created = post(client, "/v1/sessions", merchant["test"], VOICE)
    assert created.status_code == 201
    assert "Retry-After" not in created.headers
    unknown = "/v1/sessions/00000000-0000-4000-8000-000000000000"
    missing = client.get(unknown, headers={"Authorization": merchant["test"]})
    assert missing.status_code == 404
    assert "Retry-After" not in missing.headers

    limited = app_for(tuned(services, rate_limit_test="1/hour")).test_client()
    auth = {"Authorization": merchant["test"]}
    assert "Retry-After" not in limited.get(unknown, headers=auth).headers
    refused = limited.get(unknown, headers=auth)
    assert refused.status_code == 429
    assert 3500 < int(refused.headers["Retry-After"]) <= 3600


def test_the_database_down_503_carries_its_own_retry_after_not_the_rate_limiters() -> None:
    closed_port = free_port()
    url = f"postgresql+psycopg://postgres@127.0.0.1:{closed_port}/test"
    services = build_services(make_settings(url), db=Database(url))
    client = app_for(services).test_client()
    auth = {"Authorization": "Bearer mvn_test_" + "a" * 32}
    try:
        answers = [client.get("/v1/sessions/any", headers=auth) for _ in range(2)]
    finally:
        services.db.dispose()
    assert [a.status_code for a in answers] == [503, 503]
    assert [a.headers.get_all("Retry-After") for a in answers] == [["5"], ["5"]]
