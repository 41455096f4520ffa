"""`paydial widget set`: per-project widget settings from the command line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from paydial.cli import main
from payments.accounts import get_project_by_slug
from payments.project_settings import WidgetSettings, project_settings
from payments.services import Services
from tests.conftest import TEST_SECRET_KEY, TEST_TWILIO_TOKEN


@pytest.fixture
def cli(
    services: Services,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    make_project: Callable[..., str],
) -> Callable[..., int]:
    """`paydial …` against the test database, with a project 'shop'."""
    monkeypatch.setenv("DATABASE_URL", services.settings.database_url)
    monkeypatch.setenv("PAYDIAL_SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TEST_TWILIO_TOKEN)
    monkeypatch.chdir(tmp_path)
    make_project("shop")
    return lambda *argv: main(list(argv))


def widget_of(services: Services, slug: str = "shop") -> WidgetSettings:
    with services.db.transaction() as tx:
        return project_settings(get_project_by_slug(tx, slug)).widget


def test_widget_set_stores_theme_labels_fields_and_origins(
    cli: Callable[..., int], services: Services
) -> None:
    status = cli(
        "widget",
        "set",
        "shop",
        "theme.primary=#123456",
        "labels.submit=Pay now",
        "fields.postal_code=true",
        "fields.cardholder_name=yes",
        "allowed_origins=https://A.example,https://b.example:8443",
    )
    assert status == 0
    assert widget_of(services) == WidgetSettings(
        theme={"primary": "#123456"},
        labels={"submit": "Pay now"},
        fields={"postal_code": True, "cardholder_name": True},
        allowed_origins=["https://a.example", "https://b.example:8443"],
    )


def test_widget_set_changes_only_what_it_names_and_an_empty_value_removes(
    cli: Callable[..., int], services: Services
) -> None:
    cli("widget", "set", "shop", "theme.primary=#123456", "theme.radius=4px", "labels.cvc=CVV")
    assert cli("widget", "set", "shop", "theme.radius=", "fields.postal_code=false") == 0
    widget = widget_of(services)
    assert widget.theme == {"primary": "#123456"}
    assert widget.labels == {"cvc": "CVV"}
    assert widget.fields == {"postal_code": False}


@pytest.mark.parametrize(
    ("assignment", "complaint"),
    [
        ("theme.primary=red;background:url(x)", "theme.primary"),
        ("theme.shadow=#000", "unknown widget setting 'theme.shadow'"),
        ("fields.postal_code=maybe", "expected true or false"),
        ("allowed_origins=https://a.example/checkout", "not an origin"),
        ("colour=blue", "unknown widget setting 'colour'"),
        ("nonsense", "expected KEY=VALUE"),
    ],
)
def test_widget_set_refuses_a_bad_setting_and_changes_nothing(
    cli: Callable[..., int],
    services: Services,
    capsys: pytest.CaptureFixture[str],
    assignment: str,
    complaint: str,
) -> None:
    assert cli("widget", "set", "shop", "labels.submit=Go", assignment) == 1
    assert complaint in capsys.readouterr().err
    assert widget_of(services) == WidgetSettings()


def test_widget_set_for_an_unknown_project_fails(
    cli: Callable[..., int], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli("widget", "set", "nope", "labels.submit=Go") == 1
    assert "nope" in capsys.readouterr().err
