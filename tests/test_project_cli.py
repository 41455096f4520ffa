"""`paydial project show` and `project set`: the API's settings vocabulary from the command line."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from paydial.cli import main
from payments.accounts import get_project_by_slug
from payments.project_settings import ProjectSettings, WidgetSettings, project_settings
from payments.services import Services
from tests.conftest import setting_change_rows


def settings_of(services: Services, slug: str = "shop") -> ProjectSettings:
    with services.db.transaction() as tx:
        return project_settings(get_project_by_slug(tx, slug))


def test_project_set_changes_call_and_widget_settings_in_one_vocabulary(
    cli_env: str,
    make_project: Callable[..., str],
    services: Services,
    capsys: pytest.CaptureFixture[str],
) -> None:
    make_project("shop")
    status = main(
        [
            "project",
            "set",
            "shop",
            "display_name=Shop & Co",
            "require_postal_code=true",
            "language=es-US",
            "accepted_brands=visa,amex",
            "max_payment_attempts=2",
            "webhook_events=expired,abandoned",
            "callback_countries=us,gb",
            "authorize_only=yes",
            "widget.theme.primary=#123456",
            "widget.labels.submit=Pay now",
            "widget.fields.postal_code=true",
            "widget.allowed_origins=https://A.example,https://b.example:8443",
        ]
    )
    out = capsys.readouterr().out
    assert status == 0
    assert json.loads(out)["display_name"] == "Shop & Co"
    assert settings_of(services) == ProjectSettings(
        display_name="Shop & Co",
        require_postal_code=True,
        language="es-US",
        accepted_brands=["visa", "amex"],
        max_payment_attempts=2,
        webhook_events=["expired", "abandoned"],
        callback_countries=["US", "GB"],
        authorize_only=True,
        widget=WidgetSettings(
            theme={"primary": "#123456"},
            labels={"submit": "Pay now"},
            fields={"postal_code": True},
            allowed_origins=["https://a.example", "https://b.example:8443"],
        ),
    )


def test_project_show_prints_the_document_the_api_returns(
    cli_env: str, make_project: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    make_project("shop")
    assert main(["project", "show", "shop"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["slug"] == "shop"
    assert shown["display_name"] is None
    assert shown["accepted_brands"] == ["visa", "mastercard", "amex", "discover"]
    assert shown["max_payment_attempts"] == 3
    assert shown["widget"] == {"theme": {}, "labels": {}, "fields": {}, "allowed_origins": []}
    assert shown["webhook_url"] is None and shown["webhook_secret_set"] is False


def test_an_empty_value_restores_the_default_and_other_settings_stay(
    cli_env: str, make_project: Callable[..., str], services: Services
) -> None:
    make_project("shop")
    main(["project", "set", "shop", "display_name=Shop", "widget.theme.primary=#123456"])
    main(["project", "set", "shop", "widget.theme.radius=4px", "widget.labels.cvc=CVV"])
    assert main(["project", "set", "shop", "display_name=", "widget.theme.primary="]) == 0
    settings = settings_of(services)
    assert settings.display_name is None
    assert settings.widget.theme == {"radius": "4px"}
    assert settings.widget.labels == {"cvc": "CVV"}


def test_every_change_is_in_the_audit_log_with_who_and_old_and_new(
    cli_env: str, make_project: Callable[..., str], services: Services
) -> None:
    make_project("shop")
    main(["project", "set", "shop", "display_name=Shop", "max_payment_attempts=2"])
    main(["project", "set", "shop", "display_name=Shop Two"])
    assert setting_change_rows(services) == [
        ("command line", "display_name", None, "Shop"),
        ("command line", "max_payment_attempts", 3, 2),
        ("command line", "display_name", "Shop", "Shop Two"),
    ]


@pytest.mark.parametrize(
    ("assignment", "complaint"),
    [
        ("widget.theme.primary=red;background:url(x)", "widget.theme.primary"),
        ("widget.theme.shadow=#000", "unknown theme key 'shadow'"),
        ("widget.fields.postal_code=maybe", "widget.fields.postal_code"),
        ("widget.allowed_origins=https://a.example/checkout", "not an origin"),
        (
            "widget.allowed_origins=https://shop.example.com *",
            "'https://shop.example.com *' is not",
        ),
        (
            "widget.allowed_origins=https://a.example; script-src *",
            "'https://a.example; script-src *'",
        ),
        ("max_payment_attempts=4", "max_payment_attempts: Input should be less than or equal to 3"),
        ("language=fr-FR", "language"),
        ("accepted_brands=visa,maestro", "accepted_brands.1"),
        ("webhook_events=payment-success", "webhook_events.0"),
        ("callback_countries=XX", "not an ISO 3166"),
        ("webhook_url=ftp://shop.example", "https://"),
        ("colour=blue", "unknown setting 'colour'"),
        ("widget.theme=#000", "unknown setting 'widget.theme'"),
        ("nonsense", "expected KEY=VALUE"),
    ],
)
def test_a_bad_setting_is_refused_by_name_and_nothing_changes(
    cli_env: str,
    make_project: Callable[..., str],
    services: Services,
    capsys: pytest.CaptureFixture[str],
    assignment: str,
    complaint: str,
) -> None:
    make_project("shop")
    assert main(["project", "set", "shop", "widget.labels.submit=Go", assignment]) == 1
    assert complaint in capsys.readouterr().err
    assert settings_of(services) == ProjectSettings()


def test_project_set_for_an_unknown_project_fails(
    cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["project", "set", "nope", "display_name=X"]) == 1
    assert "nope" in capsys.readouterr().err
