"""Reading, finding by caller, cancelling and expiring sessions, with the event log behind them."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from payments.model import Status
from payments.services import Services
from payments.sessions import expire_due, transition
from payments.store import PaymentSession, SessionEvent
from tests.conftest import Clock

BODY = {
    "project": "acme",
    "caller": "+14155552671",
    "amount": "25.00",
    "mode": "charge",
    "gateway": "stripe",
}


def create(client: FlaskClient, auth: str, **changes: Any) -> str:
    response = client.post(
        "/v1/sessions", json={**BODY, **changes}, headers={"Authorization": auth}
    )
    assert response.status_code == 201
    session_id: str = response.json["session_id"]
    return session_id


def events(services: Services, session_id: str) -> list[tuple[str | None, str, str]]:
    with services.db.transaction() as tx:
        rows = tx.scalars(
            select(SessionEvent)
            .where(SessionEvent.session_id == session_id)
            .order_by(SessionEvent.id)
        ).all()
        return [(e.from_status, e.to_status, e.cause) for e in rows]


def test_get_returns_the_whole_session_object(
    client: FlaskClient, merchant: dict[str, str]
) -> None:
    session_id = create(
        client,
        merchant["test"],
        description="Invoice 7",
        callback="sip:agent@example.com",
        memory="order 7",
        billing_address={"street": "1 Main", "city": "X", "state": "IL", "zip": "62701"},
    )
    body = client.get(
        f"/v1/sessions/{session_id}", headers={"Authorization": merchant["test"]}
    ).json
    assert body == {
        "session_id": session_id,
        "status": "pending",
        "is_terminal": False,
        "environment": "test",
        "project": "acme",
        "project_slug": "acme",
        "amount": "25.00",
        "currency": "USD",
        "mode": "charge",
        "gateway": "stripe",
        "caller": "+14155552671",
        "description": "Invoice 7",
        "callback": "sip:agent@example.com",
        "memory": "order 7",
        "billing_address": {
            "street": "1 Main",
            "city": "X",
            "state": "IL",
            "zip": "62701",
            "country": "US",
            "first_name": None,
            "last_name": None,
        },
        "language": "en-US",
        "created_at": "2026-11-21T12:00:00Z",
        "updated_at": "2026-11-21T12:00:00Z",
        "expires_at": "2026-11-21T12:30:00Z",
        "completed_at": None,
        "transfer_status": None,
        "card_brand": None,
        "card_last4": None,
        "processor": None,
        "confirmation_code": None,
        "error": None,
        "captured_amount": None,
        "captured_at": None,
        "voided_at": None,
        "amount_refunded": "0.00",
        "refunds": [],
    }


def test_unknown_session_is_404(client: FlaskClient, merchant: dict[str, str]) -> None:
    response = client.get(
        "/v1/sessions/00000000-0000-4000-8000-000000000000",
        headers={"Authorization": merchant["test"]},
    )
    assert response.status_code == 404
    assert response.json == {"detail": "Session not found"}


@pytest.mark.parametrize("path", ["/v1/sessions/0000", "/v1/sessions/not-a-uuid/cancel"])
def test_a_malformed_session_id_is_a_422_naming_the_path(
    client: FlaskClient, merchant: dict[str, str], path: str
) -> None:
    method = client.post if path.endswith("/cancel") else client.get
    response = method(path, headers={"Authorization": merchant["test"]})
    assert response.status_code == 422
    assert [(d["loc"], d["type"]) for d in response.json["detail"]] == [
        (["path", "session_id"], "uuid_parsing")
    ]


def test_a_session_id_in_capitals_reads_the_same_session(
    client: FlaskClient, merchant: dict[str, str]
) -> None:
    session_id = create(client, merchant["test"])
    response = client.get(
        f"/v1/sessions/{session_id.upper()}", headers={"Authorization": merchant["test"]}
    )
    assert response.status_code == 200
    assert response.json["session_id"] == session_id


def test_find_by_caller_prefers_the_active_session_over_newer_finished_ones(
    client: FlaskClient, merchant: dict[str, str], clock: Clock
) -> None:
    auth = {"Authorization": merchant["test"]}
    active = create(client, merchant["test"])
    clock.advance(minutes=1)
    finished = create(client, merchant["test"])
    assert client.post(f"/v1/sessions/{finished}/cancel", headers=auth).status_code == 204
    found = client.get("/v1/sessions", query_string={"caller": "+14155552671"}, headers=auth)
    assert found.json["session_id"] == active
    client.post(f"/v1/sessions/{active}/cancel", headers=auth)
    found = client.get("/v1/sessions", query_string={"caller": "+14155552671"}, headers=auth)
    assert found.json["session_id"] == finished  # the latest finished one


def test_find_by_caller_validates_the_number(client: FlaskClient, merchant: dict[str, str]) -> None:
    auth = {"Authorization": merchant["test"]}
    missing = client.get("/v1/sessions", headers=auth)
    assert missing.status_code == 422
    assert missing.json["detail"][0]["loc"] == ["query", "caller"]
    bad = client.get("/v1/sessions", query_string={"caller": "555"}, headers=auth)
    assert bad.status_code == 422
    assert "+14155550100" in bad.json["detail"][0]["msg"]  # the message shows an example
    none = client.get("/v1/sessions", query_string={"caller": "+14155550000"}, headers=auth)
    assert none.status_code == 404


def test_find_by_caller_reads_an_unencoded_plus_as_a_plus(
    client: FlaskClient, merchant: dict[str, str]
) -> None:
    session_id = create(client, merchant["test"])
    # The common mistake: "+" left unencoded in the query string decodes to a space.
    found = client.get(
        "/v1/sessions?caller=+14155552671", headers={"Authorization": merchant["test"]}
    )
    assert found.status_code == 200
    assert found.json["session_id"] == session_id


def test_cancel_moves_pending_to_cancelled_once(
    client: FlaskClient, merchant: dict[str, str], services: Services
) -> None:
    auth = {"Authorization": merchant["test"]}
    session_id = create(client, merchant["test"])
    response = client.post(f"/v1/sessions/{session_id}/cancel", headers=auth)
    assert response.status_code == 204 and response.data == b""
    body = client.get(f"/v1/sessions/{session_id}", headers=auth).json
    assert body["status"] == "cancelled" and body["is_terminal"] is True
    assert body["completed_at"] == "2026-11-21T12:00:00Z"
    again = client.post(f"/v1/sessions/{session_id}/cancel", headers=auth)
    assert again.status_code == 409
    assert "cancelled" in again.json["detail"]
    assert events(services, session_id) == [
        (None, "pending", "created"),
        ("pending", "cancelled", "cancelled_by_merchant"),
    ]


def test_cancel_works_while_collecting_but_not_after_payment(
    client: FlaskClient, merchant: dict[str, str], services: Services
) -> None:
    auth = {"Authorization": merchant["test"]}
    collecting, paid = create(client, merchant["test"]), create(client, merchant["test"])
    with services.db.transaction() as tx:
        for session_id in (collecting, paid):
            session = tx.get_one(PaymentSession, session_id)
            transition(tx, session, Status.COLLECTING, cause="call_bound", now=services.clock())
        transition(
            tx,
            tx.get_one(PaymentSession, paid),
            Status.PAYMENT_SUCCESS,
            cause="payment_approved",
            now=services.clock(),
        )
    assert client.post(f"/v1/sessions/{collecting}/cancel", headers=auth).status_code == 204
    assert client.post(f"/v1/sessions/{paid}/cancel", headers=auth).status_code == 409
    assert client.get(f"/v1/sessions/{paid}", headers=auth).json["status"] == "payment-success"


def test_open_sessions_read_as_expired_after_expires_at_and_the_log_says_so(
    client: FlaskClient, merchant: dict[str, str], services: Services, clock: Clock
) -> None:
    auth = {"Authorization": merchant["test"]}
    session_id = create(client, merchant["test"])
    clock.advance(minutes=29, seconds=59)
    assert client.get(f"/v1/sessions/{session_id}", headers=auth).json["status"] == "pending"
    clock.advance(seconds=1)
    body = client.get(f"/v1/sessions/{session_id}", headers=auth).json
    assert body["status"] == "expired" and body["is_terminal"] is True
    assert events(services, session_id)[-1] == ("pending", "expired", "expired")
    assert client.post(f"/v1/sessions/{session_id}/cancel", headers=auth).status_code == 409


def test_the_sweep_expires_due_sessions_and_leaves_the_rest(
    client: FlaskClient, merchant: dict[str, str], services: Services, clock: Clock
) -> None:
    old = create(client, merchant["test"])
    clock.advance(minutes=20)
    young = create(client, merchant["test"])
    clock.advance(minutes=15)
    with services.db.transaction() as tx:
        assert expire_due(tx, clock()) == 1
    with services.db.transaction() as tx:
        assert tx.get_one(PaymentSession, old).status == "expired"
        assert tx.get_one(PaymentSession, young).status == "pending"
    assert events(services, old)[-1] == ("pending", "expired", "expired")


def test_terminal_sessions_never_change_again(
    client: FlaskClient, merchant: dict[str, str], services: Services
) -> None:
    import pytest

    from payments.errors import Conflict

    session_id = create(client, merchant["test"])
    client.post(f"/v1/sessions/{session_id}/cancel", headers={"Authorization": merchant["test"]})
    with services.db.transaction() as tx, pytest.raises(Conflict):
        transition(
            tx,
            tx.get_one(PaymentSession, session_id),
            Status.PAYMENT_SUCCESS,
            cause="late",
            now=services.clock(),
        )
