"""GET /v1/auth/check, GET /v1/projects, GET/PATCH /v1/projects/{slug}: settings over the API."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient

from payments.accounts import revoke_key
from payments.services import Services
from tests.conftest import setting_change_rows


@pytest.fixture
def auth(merchant: dict[str, str]) -> dict[str, str]:
    return {"Authorization": merchant["test"]}


def patch(client: FlaskClient, auth: dict[str, str], body: Any, slug: str = "acme") -> Any:
    return client.patch(f"/v1/projects/{slug}", json=body, headers=auth)


def test_auth_check_names_the_keys_mode_and_account(
    client: FlaskClient, merchant: dict[str, str]
) -> None:
    for mode in ("test", "live"):
        response = client.get("/v1/auth/check", headers={"Authorization": merchant[mode]})
        body = response.get_json()
        assert response.status_code == 200
        assert body["authenticated"] is True and body["mode"] == mode
        assert body["account"]["name"] == "Acme Inc"
        assert merchant[mode].removeprefix("Bearer ").startswith(body["key_prefix"])
        assert len(body["key_prefix"]) == len(f"mvn_{mode}_") + 8


def test_auth_check_refuses_a_missing_or_revoked_key(
    client: FlaskClient, merchant: dict[str, str], services: Services
) -> None:
    assert client.get("/v1/auth/check").status_code == 401
    key = merchant["test"].removeprefix("Bearer ")
    with services.db.transaction() as tx:
        revoke_key(tx, key[:17], now=services.clock())
    response = client.get("/v1/auth/check", headers={"Authorization": merchant["test"]})
    assert response.status_code == 401
    assert response.get_json() == {"detail": "Invalid or revoked API key"}


def test_projects_lists_only_the_keys_account(
    client: FlaskClient, auth: dict[str, str], make_project: Callable[..., str]
) -> None:
    make_project("acme-eu", "Acme Inc")
    make_project("rival", "Rival Ltd")
    response = client.get("/v1/projects", headers=auth)
    assert response.status_code == 200
    assert [p["slug"] for p in response.get_json()["data"]] == ["acme", "acme-eu"]
    assert response.get_json()["data"][0]["display_name"] is None


def test_a_project_is_shown_with_every_setting_and_defaults(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    body = client.get("/v1/projects/acme", headers=auth).get_json()
    assert body["slug"] == "acme"
    assert {k: body[k] for k in ("display_name", "language", "require_postal_code")} == {
        "display_name": None,
        "language": "en-US",
        "require_postal_code": False,
    }
    assert body["accepted_brands"] == ["visa", "mastercard", "amex", "discover"]
    assert (body["authorize_only"], body["max_payment_attempts"]) == (False, 3)
    assert (body["webhook_events"], body["callback_countries"]) == ([], ["US", "CA"])
    assert body["widget"] == {"theme": {}, "labels": {}, "fields": {}, "allowed_origins": []}
    assert (body["webhook_url"], body["webhook_secret_set"]) == (None, False)


def test_another_accounts_project_is_not_found_for_reading_or_changing(
    client: FlaskClient, auth: dict[str, str], make_project: Callable[..., str]
) -> None:
    make_project("rival", "Rival Ltd")
    assert client.get("/v1/projects/rival", headers=auth).status_code == 404
    assert patch(client, auth, {"display_name": "Mine"}, slug="rival").status_code == 404
    assert client.get("/v1/projects/nope", headers=auth).status_code == 404


def test_patch_changes_only_what_it_sends_and_null_restores_the_default(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    first = patch(
        client,
        auth,
        {
            "display_name": "Acme Tickets",
            "require_postal_code": True,
            "language": "es-US",
            "accepted_brands": ["visa", "mastercard"],
            "authorize_only": True,
            "max_payment_attempts": 1,
            "webhook_events": ["expired", "cancelled", "abandoned"],
            "callback_countries": ["gb", "US"],
            "widget": {"theme": {"primary": "#0a7"}, "allowed_origins": ["https://Shop.example/"]},
        },
    )
    assert first.status_code == 200, first.get_json()
    assert first.get_json()["callback_countries"] == ["GB", "US"]
    second = patch(client, auth, {"display_name": None, "widget": {"labels": {"submit": "Go"}}})
    body = second.get_json()
    assert second.status_code == 200
    assert body["display_name"] is None and body["require_postal_code"] is True
    assert body["widget"] == {
        "theme": {"primary": "#0a7"},
        "labels": {"submit": "Go"},
        "fields": {},
        "allowed_origins": ["https://shop.example"],
    }
    assert client.get("/v1/projects/acme", headers=auth).get_json() == body


def test_patch_is_audited_with_the_key_and_old_and_new_values(
    client: FlaskClient, auth: dict[str, str], services: Services
) -> None:
    patch(
        client, auth, {"display_name": "Acme Tickets", "widget": {"fields": {"postal_code": True}}}
    )
    patch(client, auth, {"display_name": "Acme Tickets"})  # no change, no row
    prefix = auth["Authorization"].removeprefix("Bearer ")[:17]
    assert setting_change_rows(services) == [
        (f"api key {prefix}", "display_name", None, "Acme Tickets"),
        (f"api key {prefix}", "widget.fields.postal_code", None, True),
    ]


def test_the_first_webhook_url_returns_a_secret_once(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    first = patch(client, auth, {"webhook_url": "https://acme.example/hooks"}).get_json()
    assert first["webhook_secret"].startswith("whsec_") and first["webhook_secret_set"] is True
    again = patch(client, auth, {"webhook_url": "https://acme.example/v2"}).get_json()
    assert again["webhook_secret"] is None and again["webhook_url"] == "https://acme.example/v2"
    assert client.get("/v1/projects/acme", headers=auth).get_json()["webhook_secret"] is None


@pytest.mark.parametrize(
    ("body", "loc", "kind"),
    [
        ({"max_payment_attempts": 4}, ["max_payment_attempts"], "less_than_equal"),
        ({"max_payment_attempts": 0}, ["max_payment_attempts"], "greater_than_equal"),
        ({"language": "fr-FR"}, ["language"], "literal_error"),
        ({"accepted_brands": ["visa", "maestro"]}, ["accepted_brands", 1], "enum"),
        ({"accepted_brands": []}, ["accepted_brands"], "too_short"),
        ({"webhook_events": ["payment-success"]}, ["webhook_events", 0], "enum"),
        ({"callback_countries": ["USA"]}, ["callback_countries", 0], "value_error"),
        ({"display_name": "x" * 101}, ["display_name"], "string_too_long"),
        ({"require_postal_code": "sometimes"}, ["require_postal_code"], "bool_parsing"),
        (
            {"widget": {"theme": {"primary": "red;x:url(y)"}}},
            ["widget", "theme", "primary"],
            "value_error",
        ),
        (
            {"widget": {"theme": {"shadow": "#0"}}},
            ["widget", "theme", "shadow", "[key]"],
            "value_error",
        ),
        (
            {"widget": {"allowed_origins": ["https://a.example/x"]}},
            ["widget", "allowed_origins", 0],
            "origin",
        ),
        ({"widget": {"colour": "blue"}}, ["widget", "colour"], "extra_forbidden"),
        ({"webhook_url": "ftp://acme.example"}, ["webhook_url"], "value_error"),
        ({"slug": "other"}, ["slug"], "extra_forbidden"),
        (["display_name"], [], "dict_type"),
    ],
)
def test_a_bad_value_is_a_422_in_the_seeds_shape_and_nothing_changes(
    client: FlaskClient, auth: dict[str, str], body: Any, loc: list[Any], kind: str
) -> None:
    before = client.get("/v1/projects/acme", headers=auth).get_json()
    response = patch(client, auth, body)
    assert response.status_code == 422
    [error] = response.get_json()["detail"]
    assert set(error) == {"loc", "msg", "type"}
    assert (error["loc"], error["type"]) == (["body", *loc], kind)
    assert client.get("/v1/projects/acme", headers=auth).get_json() == before


def test_malformed_json_and_a_wrong_content_type_are_422s(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    headers = auth | {"Content-Type": "application/json"}
    broken = client.patch("/v1/projects/acme", data="{", headers=headers)
    assert broken.status_code == 422 and broken.get_json()["detail"][0]["loc"] == ["body"]
    form = client.patch("/v1/projects/acme", data={"display_name": "x"}, headers=auth)
    assert form.status_code == 422 and form.get_json()["detail"][0]["type"] == "content_type"


def test_the_contract_documents_the_new_operations(client: FlaskClient) -> None:
    document = client.get("/openapi.json").get_json()
    assert set(document["paths"]["/v1/projects/{slug}"]) == {"get", "patch"}
    assert "get" in document["paths"]["/v1/auth/check"]
    assert "get" in document["paths"]["/v1/projects"]
    changes = document["components"]["schemas"]["ProjectChanges"]["properties"]
    assert {"display_name", "language", "require_postal_code", "widget", "webhook_url"} <= set(
        changes
    )
    assert changes["max_payment_attempts"]["maximum"] == 3
    language = document["components"]["schemas"]["SessionCreate"]["properties"]["language"]
    assert "es-US" in str(language)
