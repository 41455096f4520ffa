"""Every field rule of the seed's CreateWidgetSession, through POST /v1/widget-sessions."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

VALID: dict[str, Any] = {"project": "acme", "amount_cents": 1999, "gateway": "stripe"}


def post(client: FlaskClient, auth: str, body: Any) -> Any:
    return client.post("/v1/widget-sessions", json=body, headers={"Authorization": auth})


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"mode": "charge"},
        {"mode": "tokenize", "amount_cents": 0},
        {"gateway": "authorizenet"},
        {"gateway": "braintree"},
        {"gateway": "shift4"},
        {"description": "Order #123"},
        {"description": None},
        {"amount_cents": 1},
        {"amount_cents": 100_000_000},
        {"description": "d" * 500},
    ],
)
def test_valid_widget_bodies_create_a_session(
    client: FlaskClient, merchant: dict[str, str], changes: dict[str, Any]
) -> None:
    response = post(client, merchant["test"], {**VALID, **changes})
    assert response.status_code == 201, response.json
    body = response.json
    assert set(body) == {"session_id", "status", "widget_url", "expires_at"}
    assert body["status"] == "pending"
    assert body["widget_url"] == f"https://paydial.example.com/widget/{body['session_id']}"
    assert body["expires_at"] == "2026-11-21T12:05:00Z"  # five minutes, single use


@pytest.mark.parametrize(
    ("changes", "loc", "kind"),
    [
        ({"project": ...}, ["body", "project"], "missing"),
        ({"amount_cents": ...}, ["body", "amount_cents"], "missing"),
        ({"gateway": ...}, ["body", "gateway"], "missing"),
        ({"amount_cents": -1}, ["body", "amount_cents"], "greater_than_equal"),
        ({"amount_cents": 1.5}, ["body", "amount_cents"], "int_type"),
        ({"amount_cents": "1999"}, ["body", "amount_cents"], "int_type"),
        ({"amount_cents": 1999.0}, ["body", "amount_cents"], "int_type"),
        ({"amount_cents": "ten"}, ["body", "amount_cents"], "int_type"),
        ({"amount_cents": True}, ["body", "amount_cents"], "int_type"),
        ({"amount_cents": 0}, ["body"], "greater_than"),
        ({"amount_cents": 100_000_001}, ["body", "amount_cents"], "less_than_equal"),
        ({"gateway": "paypal"}, ["body", "gateway"], "enum"),
        ({"gateway": 3}, ["body", "gateway"], "string_type"),
        ({"mode": "refund"}, ["body", "mode"], "string_pattern_mismatch"),
        ({"mode": "charge "}, ["body", "mode"], "string_pattern_mismatch"),
        ({"description": "d" * 501}, ["body", "description"], "string_too_long"),
        ({"description": 5}, ["body", "description"], "string_type"),
    ],
)
def test_invalid_widget_bodies_get_a_422_naming_the_field(
    client: FlaskClient,
    merchant: dict[str, str],
    changes: dict[str, Any],
    loc: list[str],
    kind: str,
) -> None:
    body = {k: v for k, v in {**VALID, **changes}.items() if v is not ...}
    response = post(client, merchant["test"], body)
    assert response.status_code == 422
    assert {"loc": loc, "type": kind} in [
        {"loc": d["loc"], "type": d["type"]} for d in response.json["detail"]
    ]
