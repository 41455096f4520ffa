"""A project's settings: what the call says and asks, which events the merchant gets, and the
widget's look, fields and origins; one vocabulary for the API, the command line and the frame."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, Field

from payments.store import Project

# The widget keys a project may set; frame.js maps the theme keys onto CSS custom properties.
THEME_KEYS = (
    "primary",
    "primary_text",
    "background",
    "text",
    "muted",
    "border",
    "error",
    "success",
    "radius",
    "font",
)
OPTIONAL_FIELDS = ("cardholder_name", "postal_code")
DEFAULT_LABELS = {
    "title": "Card payment",
    "card_number": "Card number",
    "expiry": "Expiry date",
    "cvc": "Security code",
    "cardholder_name": "Name on card",
    "postal_code": "Billing ZIP code",
    "submit": "Pay {amount}",
    "try_again": "Try again",
    "success": "Payment complete",
    "declined": "Payment declined",
    "closed": "Payment closed",
}
LABEL_KEYS = tuple(DEFAULT_LABELS)
# The same rule frame.js applies before a value becomes a CSS custom property.
SAFE_CSS_VALUE = re.compile(r"^[#(),.%\w\s-]{1,64}$")
MAX_LABEL_CHARS = 80
BOOLEANS = {
    "true": True,
    "yes": True,
    "on": True,
    "1": True,
    "false": False,
    "no": False,
    "off": False,
    "0": False,
}
KEYS_HELP = (
    "keys: theme.{"
    + ",".join(THEME_KEYS)
    + "}=VALUE, labels.{"
    + ",".join(LABEL_KEYS)
    + "}=TEXT, fields.{"
    + ",".join(OPTIONAL_FIELDS)
    + "}=true|false, "
    "allowed_origins=https://a.example,https://b.example. An empty value removes the setting."
)


def widget_settings_with(current: WidgetSettings, changes: Mapping[str, str]) -> WidgetSettings:
    """The settings after KEY=VALUE changes; raises ValueError naming the first bad one."""
    theme, labels = dict(current.theme), dict(current.labels)
    fields, origins = dict(current.fields), list(current.allowed_origins)
    for key, value in changes.items():
        group, _, name = key.partition(".")
        if group == "theme" and name in THEME_KEYS:
            if value and not SAFE_CSS_VALUE.fullmatch(value):
                raise ValueError(f"{key}: {value!r} is not a colour, length or font name")
            _put(theme, name, value)
        elif group == "labels" and name in LABEL_KEYS:
            if len(value) > MAX_LABEL_CHARS:
                raise ValueError(f"{key}: at most {MAX_LABEL_CHARS} characters")
            _put(labels, name, value)
        elif group == "fields" and name in OPTIONAL_FIELDS:
            if value.lower() not in BOOLEANS:
                raise ValueError(f"{key}: expected true or false, got {value!r}")
            fields[name] = BOOLEANS[value.lower()]
        elif key == "allowed_origins":
            origins = [_origin(o) for o in value.split(",") if o.strip()]
        else:
            raise ValueError(f"unknown widget setting {key!r}; {KEYS_HELP}")
    return WidgetSettings(theme=theme, labels=labels, fields=fields, allowed_origins=origins)


def _put(values: dict[str, str], name: str, value: str) -> None:
    if value:
        values[name] = value
    else:
        values.pop(name, None)


def _origin(value: str) -> str:
    origin = normalize_origin(value)
    if origin is None:
        raise ValueError(
            f"allowed_origins: {value.strip()!r} is not an origin like https://shop.example"
        )
    return origin


def normalize_origin(value: str) -> str | None:
    """`https://Shop.example:8443/` -> `https://shop.example:8443`; None for a non-origin."""
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")


class WidgetSettings(BaseModel):
    """How the card frame looks and what it asks for."""

    theme: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    fields: dict[str, bool] = Field(default_factory=dict)
    allowed_origins: list[str] = Field(default_factory=list)


class ProjectSettings(BaseModel):
    """Per-project behaviour, stored as JSON on the project row."""

    merchant_name: str | None = None
    language: str = "en-US"
    require_zip: bool = False
    accepted_brands: list[str] = Field(
        default_factory=lambda: ["visa", "mastercard", "amex", "discover"]
    )
    authorize_only: bool = False
    max_payment_attempts: int = Field(3, ge=1, le=10)
    webhook_events: list[str] = Field(default_factory=list)
    # ISO 3166 alpha-2 countries a callback number may be in: transfers dial out on our bill.
    callback_countries: list[str] = Field(default_factory=lambda: ["US", "CA"])
    widget: WidgetSettings = Field(default_factory=WidgetSettings)


def project_settings(project: Project) -> ProjectSettings:
    return ProjectSettings.model_validate(project.settings or {})


def update_project_settings(project: Project, **changes: Any) -> ProjectSettings:
    """Validate and store changed settings; raises pydantic.ValidationError on bad values."""
    merged = project_settings(project).model_dump() | changes
    validated = ProjectSettings.model_validate(merged)
    project.settings = validated.model_dump(mode="json")
    return validated
