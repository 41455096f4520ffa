"""`allowed_origins`: parsed and normalised by the settings model itself, so every surface (the
command line, the API, a stored row) gets the same rule and no value can inject CSP."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask.testing import FlaskClient
from pydantic import ValidationError

from api.errors import wire_errors
from payments.accounts import get_project_by_slug
from payments.project_settings import ProjectSettings, WidgetSettings, project_settings
from payments.services import Services
from tests.conftest import store_live_credentials
from tests.widget.test_frame import csp

HOSTILE = [
    "https://shop.example.com *",
    "https://shop.example.com; script-src *",
    "*",
    "https://*.example.com",
    "'self'",
    "https://shop.example.com/checkout",
    "ftp://shop.example.com",
    "https://user@shop.example.com",
    "https://shop.example.com:99999",
    "https://shop_example.com",
    "data:",
    "https://",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_anything_but_an_origin_is_refused_naming_the_offending_value(value: str) -> None:
    with pytest.raises(ValidationError) as refused:
        ProjectSettings.model_validate(
            {"widget": {"allowed_origins": ["https://a.example", value]}}
        )
    [error] = wire_errors(refused.value.errors(), ("body",))
    assert error["loc"] == ["body", "widget", "allowed_origins", 1]
    assert error["type"] == "origin"
    assert f"'{value.strip()}' is not an origin" in error["msg"]


def test_origins_are_normalised_to_scheme_host_and_port() -> None:
    widget = WidgetSettings(
        allowed_origins=[
            " https://Shop.Example.com/ ",
            "https://shop.example.com:443",
            "http://localhost:3000",
            "https://[::1]:8443",
            "https://192.0.2.10",
        ]
    )
    assert widget.allowed_origins == [
        "https://shop.example.com",
        "http://localhost:3000",
        "https://[::1]:8443",
        "https://192.0.2.10",
    ]


def test_live_mode_takes_https_origins_only() -> None:
    origins = {"widget": {"allowed_origins": ["https://shop.example", "http://shop.example"]}}
    assert ProjectSettings.model_validate(origins).widget.allowed_origins == [
        "https://shop.example",
        "http://shop.example",
    ]
    with pytest.raises(ValidationError) as refused:
        ProjectSettings.model_validate(origins, context={"live": True})
    [error] = refused.value.errors()
    assert error["loc"] == ("widget", "allowed_origins", 1)
    assert "'http://shop.example'" in error["msg"] and "https" in error["msg"]


@pytest.mark.parametrize("value", ["https://shop.example.com *", "https://a.example; script-src *"])
def test_the_api_refuses_a_hostile_origin_with_a_422_naming_it(
    client: FlaskClient, merchant: dict[str, str], value: str
) -> None:
    response = client.patch(
        "/v1/projects/acme",
        json={"widget": {"allowed_origins": [value]}},
        headers={"Authorization": merchant["test"]},
    )
    assert response.status_code == 422
    [error] = response.get_json()["detail"]
    assert error["loc"] == ["body", "widget", "allowed_origins", 0]
    assert error["msg"].startswith(f"'{value}' is not an origin")


def test_a_live_key_may_set_https_origins_only_and_a_test_key_http_too(
    client: FlaskClient, merchant: dict[str, str]
) -> None:
    body = {"widget": {"allowed_origins": ["http://localhost:3000"]}}
    live = client.patch("/v1/projects/acme", json=body, headers={"Authorization": merchant["live"]})
    assert live.status_code == 422
    assert live.get_json()["detail"][0]["type"] == "origin_https"
    test = client.patch("/v1/projects/acme", json=body, headers={"Authorization": merchant["test"]})
    assert test.status_code == 200
    assert test.get_json()["widget"]["allowed_origins"] == ["http://localhost:3000"]
    # A live key changing something else leaves the test origin alone.
    other = client.patch(
        "/v1/projects/acme", json={"language": "es-US"}, headers={"Authorization": merchant["live"]}
    )
    assert other.status_code == 200


def test_a_live_frame_is_embeddable_only_on_the_https_origins(
    client: FlaskClient, services: Services, make_widget_session: Callable[..., str]
) -> None:
    make_widget_session()  # the project exists once it has a session
    store_live_credentials(services, "shop")
    sid = make_widget_session(environment="live")
    with services.db.transaction() as tx:
        project = get_project_by_slug(tx, "shop")
        project.settings = {
            "widget": {"allowed_origins": ["http://shop.example", "https://shop.example"]}
        }
    response = client.get(f"/widget/{sid}?origin=https://shop.example")
    assert response.status_code == 200
    assert csp(response)["frame-ancestors"] == "https://shop.example"
    assert client.get(f"/widget/{sid}?origin=http://shop.example").status_code == 403


def test_a_hostile_origin_stored_before_this_rule_never_reaches_the_frames_csp(
    client: FlaskClient, services: Services, make_widget_session: Callable[..., str]
) -> None:
    sid = make_widget_session()
    with services.db.transaction() as tx:
        project = get_project_by_slug(tx, "shop")
        project.settings = {
            "widget": {
                "allowed_origins": ["https://shop.example; script-src *", "https://a.example"]
            }
        }
    response = client.get(f"/widget/{sid}")
    assert response.status_code == 200
    policy = csp(response)
    # the stored origin, and Paydial's own (a test session: the /demo page may embed it)
    assert policy["frame-ancestors"] == "https://a.example http://localhost"
    assert policy["script-src"] == "'self'"
    with services.db.transaction() as tx:
        stored = project_settings(get_project_by_slug(tx, "shop"))
    assert stored.widget.allowed_origins == ["https://a.example"]
