"""401 for missing/bad/revoked keys; 404 for anything outside a key's account or mode."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from payments.accounts import revoke_key
from payments.services import Services

BODY = {
    "project": "acme",
    "caller": "+14155552671",
    "amount": 10,
    "mode": "charge",
    "gateway": "stripe",
}


def create(client: FlaskClient, auth: str, **changes: Any) -> Any:
    return client.post("/v1/sessions", json={**BODY, **changes}, headers={"Authorization": auth})


@pytest.mark.parametrize(
    ("header", "detail"),
    [
        (None, "Not authenticated"),
        ("", "Not authenticated"),
        ("Basic dXNlcjpwYXNz", "Not authenticated"),
        ("Bearer ", "Not authenticated"),
        ("Bearer mvn_test_" + "x" * 32, "Invalid or revoked API key"),
        ("Bearer sk_test_123", "Invalid or revoked API key"),
    ],
)
def test_requests_without_a_valid_key_get_401(
    client: FlaskClient, merchant: dict[str, str], header: str | None, detail: str
) -> None:
    headers = {} if header is None else {"Authorization": header}
    for response in (
        client.post("/v1/sessions", json=BODY, headers=headers),
        client.get("/v1/sessions/anything", headers=headers),
        client.get("/v1/sessions?caller=%2B14155552671", headers=headers),
        client.post("/v1/sessions/anything/cancel", headers=headers),
        client.post("/v1/widget-sessions", json={}, headers=headers),
    ):
        assert response.status_code == 401
        assert response.json == {"detail": detail}
        assert response.headers["WWW-Authenticate"].lower().startswith("bearer")


def test_a_revoked_key_stops_working(
    client: FlaskClient, services: Services, make_project: Any, make_key: Any
) -> None:
    make_project("shop")
    key = make_key("shop")
    assert create(client, f"Bearer {key}", project="shop").status_code == 201
    with services.db.transaction() as tx:
        revoke_key(tx, key[: len("mvn_test_") + 8], now=services.clock())
    response = create(client, f"Bearer {key}", project="shop")
    assert response.status_code == 401


def test_keys_are_stored_only_as_hashes(
    services: Services, make_project: Any, make_key: Any
) -> None:
    from sqlalchemy import select

    from payments.store import ApiKey

    make_project("shop")
    key = make_key("shop", "live")
    assert key.startswith("mvn_live_") and len(key) == len("mvn_live_") + 32
    with services.db.transaction() as tx:
        rows = tx.execute(select(ApiKey.prefix, ApiKey.key_hash)).all()
    assert all(key not in (prefix, digest) for prefix, digest in rows)


def test_another_accounts_session_and_project_are_not_found(
    client: FlaskClient, merchant: dict[str, str], make_project: Any, make_key: Any
) -> None:
    make_project("rival", "Rival LLC")
    rival = f"Bearer {make_key('rival')}"
    session_id = create(client, merchant["test"]).json["session_id"]
    assert (
        client.get(f"/v1/sessions/{session_id}", headers={"Authorization": rival}).status_code
        == 404
    )
    assert (
        client.post(
            f"/v1/sessions/{session_id}/cancel", headers={"Authorization": rival}
        ).status_code
        == 404
    )
    assert (
        client.get(
            "/v1/sessions?caller=%2B14155552671", headers={"Authorization": rival}
        ).status_code
        == 404
    )
    assert create(client, rival, project="acme").status_code == 404


def test_a_project_of_the_same_account_is_usable_by_the_accounts_key(
    client: FlaskClient, merchant: dict[str, str], make_project: Any
) -> None:
    make_project("acme-eu", "Acme Inc")
    assert create(client, merchant["test"], project="acme-eu").status_code == 201


def test_a_test_key_cannot_see_live_sessions_nor_the_reverse(
    client: FlaskClient, live_merchant: dict[str, str]
) -> None:
    merchant = live_merchant
    live = create(client, merchant["live"]).json["session_id"]
    test = create(client, merchant["test"]).json["session_id"]
    get = client.get
    assert (
        get(f"/v1/sessions/{live}", headers={"Authorization": merchant["test"]}).status_code == 404
    )
    assert (
        get(f"/v1/sessions/{test}", headers={"Authorization": merchant["live"]}).status_code == 404
    )
    assert (
        get(f"/v1/sessions/{live}", headers={"Authorization": merchant["live"]}).json["environment"]
        == "live"
    )
    assert (
        get(f"/v1/sessions/{test}", headers={"Authorization": merchant["test"]}).json["environment"]
        == "test"
    )
