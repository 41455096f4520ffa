"""Every field rule of the seed's SessionCreate, valid and invalid, through POST /v1/sessions."""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Connection, event, select

from payments.services import Services
from payments.sessions import ACCESS_CODE_DRAWS
from payments.store import PaymentSession, SessionEvent

VALID: dict[str, Any] = {
    "project": "acme",
    "caller": "+14155552671",
    "amount": "150.00",
    "mode": "charge",
    "gateway": "stripe",
}
ADDRESS = {"street": "1 Main St", "city": "Springfield", "state": "IL", "zip": "62701"}


def post(client: FlaskClient, auth: str, body: Any) -> Any:
    return client.post("/v1/sessions", json=body, headers={"Authorization": auth})


def with_(**changes: Any) -> dict[str, Any]:
    body = {**VALID, **changes}
    return {k: v for k, v in body.items() if v is not ...}


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"amount": 150},
        {"amount": 150.5},
        {"amount": "0.01"},
        {"amount": "+12.30"},
        {"amount": "0007.5"},
        {"amount": "1000000.00"},
        {"amount": 0, "mode": "tokenize"},
        {"amount": "0", "mode": "tokenize"},
        {"gateway": "authorizenet"},
        {"gateway": "braintree"},
        {"gateway": "shift4"},
        {"description": "x" * 500},
        {"description": None},
        {"callback": "+16135550123"},
        {"callback": "sip:agent@example.com"},
        {"callback": "sips:agent@pbx.example.com:5061;transport=tls"},
        {"callback": None},
        {"memory": "café \"quoted\" 'single' <tag> & more"},
        {"memory": None},
        {"memory": "m" * 20_000},
        {"billing_address": ADDRESS},
        {"billing_address": {**ADDRESS, "country": "CA", "first_name": "A" * 50, "last_name": "B"}},
        {"billing_address": None},
        {"project": None},  # replaced below by the project's UUID
        {"language": "es-US"},
        {"unknown_field": "ignored, as FastAPI-built servers do"},
    ],
)
def test_valid_bodies_create_a_session(
    client: FlaskClient, merchant: dict[str, str], make_project: Any, changes: dict[str, Any]
) -> None:
    if changes == {"project": None}:
        changes = {"project": make_project("second", "Acme Inc")}
    response = post(client, merchant["test"], with_(**changes))
    assert response.status_code == 201, response.json
    assert response.json["status"] == "pending"


@pytest.mark.parametrize(
    ("changes", "loc", "kind"),
    [
        ({"project": ...}, ["body", "project"], "missing"),
        ({"caller": ...}, ["body", "caller"], "missing"),
        ({"amount": ...}, ["body", "amount"], "missing"),
        ({"mode": ...}, ["body", "mode"], "missing"),
        ({"gateway": ...}, ["body", "gateway"], "missing"),
        ({"project": 12}, ["body", "project"], "string_type"),
        ({"caller": "4155552671"}, ["body", "caller"], "phone_number"),
        ({"caller": "+1 415 555 2671"}, ["body", "caller"], "phone_number"),
        ({"caller": "+10000000000"}, ["body", "caller"], "phone_number"),
        ({"caller": "not a number"}, ["body", "caller"], "phone_number"),
        ({"amount": -1}, ["body", "amount"], "greater_than_equal"),
        ({"amount": "-1.00"}, ["body", "amount"], "greater_than_equal"),
        ({"amount": "1.234"}, ["body", "amount"], "decimal_max_places"),
        ({"amount": 1.005}, ["body", "amount"], "decimal_max_places"),
        ({"amount": "abc"}, ["body", "amount"], "string_pattern_mismatch"),
        ({"amount": "1e5"}, ["body", "amount"], "string_pattern_mismatch"),
        ({"amount": "."}, ["body", "amount"], "string_pattern_mismatch"),
        ({"amount": ""}, ["body", "amount"], "string_pattern_mismatch"),
        ({"amount": True}, ["body", "amount"], "amount_type"),
        ({"amount": None}, ["body", "amount"], "amount_type"),
        ({"amount": "1000000.01"}, ["body", "amount"], "less_than_equal"),
        ({"amount": 0}, ["body"], "greater_than"),
        ({"amount": "0.00"}, ["body"], "greater_than"),
        ({"mode": "refund"}, ["body", "mode"], "enum"),
        ({"gateway": "paypal"}, ["body", "gateway"], "enum"),
        ({"description": "x" * 501}, ["body", "description"], "string_too_long"),
        ({"callback": "+1" + "2" * 256}, ["body", "callback"], "string_too_long"),
        ({"callback": "4155552671"}, ["body", "callback"], "callback"),
        ({"callback": "sip:no-host"}, ["body", "callback"], "sip_uri"),
        ({"callback": "http://example.com"}, ["body", "callback"], "callback"),
        ({"memory": "m" * 20_001}, ["body", "memory"], "string_too_long"),
        ({"billing_address": {}}, ["body", "billing_address", "street"], "missing"),
        (
            {"billing_address": {**ADDRESS, "street": ""}},
            ["body", "billing_address", "street"],
            "string_too_short",
        ),
        (
            {"billing_address": {**ADDRESS, "street": "s" * 61}},
            ["body", "billing_address", "street"],
            "string_too_long",
        ),
        (
            {"billing_address": {**ADDRESS, "city": "c" * 41}},
            ["body", "billing_address", "city"],
            "string_too_long",
        ),
        (
            {"billing_address": {**ADDRESS, "state": "I"}},
            ["body", "billing_address", "state"],
            "string_too_short",
        ),
        (
            {"billing_address": {**ADDRESS, "zip": "12"}},
            ["body", "billing_address", "zip"],
            "string_too_short",
        ),
        (
            {"billing_address": {**ADDRESS, "zip": "1" * 21}},
            ["body", "billing_address", "zip"],
            "string_too_long",
        ),
        (
            {"billing_address": {**ADDRESS, "country": "U"}},
            ["body", "billing_address", "country"],
            "string_too_short",
        ),
        (
            {"billing_address": {**ADDRESS, "first_name": "f" * 51}},
            ["body", "billing_address", "first_name"],
            "string_too_long",
        ),
        (
            {"billing_address": {**ADDRESS, "last_name": "l" * 51}},
            ["body", "billing_address", "last_name"],
            "string_too_long",
        ),
        ({"billing_address": "1 Main St"}, ["body", "billing_address"], "model_type"),
        ({"language": "fr-FR"}, ["body", "language"], "literal_error"),
    ],
)
def test_invalid_bodies_get_a_422_naming_the_field(
    client: FlaskClient,
    merchant: dict[str, str],
    changes: dict[str, Any],
    loc: list[str],
    kind: str,
) -> None:
    response = post(client, merchant["test"], with_(**changes))
    assert response.status_code == 422
    detail = response.json["detail"]
    assert {"loc": loc, "type": kind} in [{"loc": d["loc"], "type": d["type"]} for d in detail]
    assert all(set(d) == {"loc", "msg", "type"} and d["msg"] for d in detail)


def test_an_unknown_project_is_not_found(client: FlaskClient, merchant: dict[str, str]) -> None:
    response = post(client, merchant["test"], with_(project="nope"))
    assert response.status_code == 404
    assert response.json == {"detail": "Project not found"}


def test_the_created_response_has_the_seed_fields_plus_access_code_and_expiry(
    client: FlaskClient, merchant: dict[str, str]
) -> None:
    body = post(client, merchant["test"], VALID).json
    assert set(body) == {
        "session_id",
        "status",
        "phone_number",
        "sip_uri",
        "created_at",
        "access_code",
        "expires_at",
    }
    assert body["sip_uri"] == f"sip:{body['session_id']}@pay.sip.example.com"
    assert body["phone_number"] == "+15005550006"
    assert len(body["access_code"]) == 6 and body["access_code"].isdigit()
    assert body["created_at"] == "2026-11-21T12:00:00Z"
    assert body["expires_at"] == "2026-11-21T12:30:00Z"


def test_each_session_gets_its_own_sip_uri_and_access_code(
    client: FlaskClient, merchant: dict[str, str]
) -> None:
    first = post(client, merchant["test"], VALID).json
    second = post(client, merchant["test"], VALID).json
    assert first["sip_uri"] != second["sip_uri"]
    assert first["access_code"] != second["access_code"]


def draws(monkeypatch: pytest.MonkeyPatch, *codes: int) -> list[int]:
    """Make the access-code draws return `codes` in turn (the last one from then on); the list
    of what was drawn."""
    drawn: list[int] = []

    def randbelow(_upper: int) -> int:
        drawn.append(codes[min(len(drawn), len(codes) - 1)])
        return drawn[-1]

    monkeypatch.setattr(secrets, "randbelow", randbelow)
    return drawn


def test_a_drawn_access_code_already_in_use_is_drawn_again(
    client: FlaskClient, merchant: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn = draws(monkeypatch, 123456, 123456, 654321)
    first = post(client, merchant["test"], VALID).json
    second = post(client, merchant["test"], VALID).json
    assert (first["access_code"], second["access_code"]) == ("123456", "654321")
    assert drawn == [123456, 123456, 654321]


def test_an_ended_sessions_access_code_may_be_drawn_again(
    client: FlaskClient, merchant: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    draws(monkeypatch, 123456)
    first = post(client, merchant["test"], VALID).json
    cancelled = client.post(
        f"/v1/sessions/{first['session_id']}/cancel", headers={"Authorization": merchant["test"]}
    )
    assert cancelled.status_code == 204
    second = post(client, merchant["test"], VALID)
    assert second.status_code == 201
    assert second.json["access_code"] == first["access_code"] == "123456"


def test_when_every_draw_clashes_the_create_is_refused_with_nothing_stored(
    client: FlaskClient,
    merchant: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    services: Services,
) -> None:
    drawn = draws(monkeypatch, 123456)
    assert post(client, merchant["test"], VALID).status_code == 201
    refused = post(client, merchant["test"], VALID)
    assert refused.status_code == 409
    assert "No access code is free" in refused.json["detail"]
    assert len(drawn) == 1 + ACCESS_CODE_DRAWS
    with services.db.transaction() as tx:
        assert tx.scalars(select(PaymentSession.access_code)).all() == ["123456"]


def test_amounts_read_back_as_dollar_strings(client: FlaskClient, merchant: dict[str, str]) -> None:
    created = post(client, merchant["test"], with_(amount=150.5)).json
    read = client.get(
        f"/v1/sessions/{created['session_id']}", headers={"Authorization": merchant["test"]}
    ).json
    assert read["amount"] == "150.50"
    assert read["currency"] == "USD"


def test_the_contract_describes_billing_address_as_the_code_uses_it(client: FlaskClient) -> None:
    schemas = client.get("/openapi.json").get_json()["components"]["schemas"]
    described = schemas["SessionCreate"]["properties"]["billing_address"]["description"]

    assert "ignored for other gateways" not in described
    for gateway in ("Stripe", "Authorize.net", "Braintree", "Shift4"):
        assert gateway in described
    assert "AVS answers 'U' (unavailable)" in described


def test_a_create_writes_its_two_rows_in_one_statement_outside_a_transaction_on_postgresql(
    client: FlaskClient, merchant: dict[str, str], services: Services
) -> None:
    """The API's busiest write: on PostgreSQL the key, the project and one INSERT of both rows,
    each in autocommit, so no BEGIN and COMMIT go to the server; on SQLite, where an INSERT
    cannot sit in a CTE, the two rows are two INSERTs in one transaction."""
    sent: list[tuple[str, bool]] = []

    def note(conn: Connection, _cursor: Any, statement: str, *_args: Any) -> None:
        autocommit = getattr(conn.connection.dbapi_connection, "autocommit", False)
        sent.append((statement.split(None, 1)[0], autocommit is True))

    event.listen(services.db.engine, "before_cursor_execute", note)
    try:
        created = post(client, merchant["test"], VALID)
    finally:
        event.remove(services.db.engine, "before_cursor_execute", note)

    assert created.status_code == 201
    if services.db.engine.dialect.name == "postgresql":
        assert sent == [("SELECT", True), ("SELECT", True), ("WITH", True)]
    else:
        assert [verb for verb, _ in sent if verb != "BEGIN"] == [
            "SELECT",
            "SELECT",
            "INSERT",
            "INSERT",
        ]
    with services.db.transaction() as tx:
        stored = tx.get_one(PaymentSession, created.json["session_id"])
        events = tx.scalars(select(SessionEvent).where(SessionEvent.session_id == stored.id))
        assert [(e.from_status, e.to_status, e.cause, e.at, e.detail) for e in events] == [
            (None, "pending", "created", stored.created_at, None)
        ]
