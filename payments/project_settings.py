"""A project's settings: what the call says and asks, which events the merchant gets, and the
widget's look, fields and origins. One vocabulary for the API (`PATCH /v1/projects/{slug}`), the
command line (`paydial project set SLUG key=value…`, the dotted path of the same document) and the
dashboard; pydantic validates all three the same way."""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any, Literal, Protocol, get_origin
from urllib.parse import urlsplit

import phonenumbers
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
)
from pydantic_core import PydanticCustomError

from gateways.cards import Brand
from payments.store import Project

log = logging.getLogger(__name__)

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
# A DNS name (letters, digits, inner hyphens per label) or an IPv4 address; IPv6 is checked apart.
HOST_NAME = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*")
DEFAULT_PORTS = {"http": 80, "https": 443}
LANGUAGES = ("en-US", "es-US")
MAX_PAYMENT_ATTEMPTS = 3


class OptInEvent(StrEnum):
    """Events a project may choose to hear about (payment results are always sent): session
    endings, and what happens after the payment (payments.refunds)."""

    EXPIRED = "expired"
    CANCELLED = "cancelled"
    ABANDONED = "abandoned"
    REFUND_SUCCEEDED = "refund-succeeded"
    REFUND_FAILED = "refund-failed"
    PAYMENT_CAPTURED = "payment-captured"
    PAYMENT_VOIDED = "payment-voided"


def _one_of(allowed: tuple[str, ...], what: str) -> AfterValidator:
    def check(value: str) -> str:
        if value not in allowed:
            raise ValueError(f"unknown {what} {value!r}; one of: {', '.join(allowed)}")
        return value

    return AfterValidator(check)


def _css_value(value: str) -> str:
    if not SAFE_CSS_VALUE.fullmatch(value):
        raise ValueError(f"{value!r} is not a colour, length or font name")
    return value


def normalize_origin(value: str) -> str | None:
    """`https://Shop.example:8443/` -> `https://shop.example:8443`; None for a non-origin.

    Only `scheme://host[:port]` with a DNS name or an IP address is an origin: anything else
    (`*`, spaces, `;`, quotes, paths, user names) could widen the frame's CSP if let through.
    """
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment or "@" in parts.netloc:
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        try:
            host = f"[{ipaddress.IPv6Address(host)}]"
        except ValueError:
            return None
    elif not HOST_NAME.fullmatch(host):
        return None
    if port == DEFAULT_PORTS[parts.scheme]:
        port = None
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")


def _origin(value: str, info: ValidationInfo) -> str:
    """An allowed origin, normalised; in live mode (`context={"live": True}`) https only."""
    origin = normalize_origin(value)
    if origin is None:
        raise PydanticCustomError(
            "origin",
            "'{value}' is not an origin like https://shop.example (scheme://host[:port])",
            {"value": value.strip()},
        )
    if (info.context or {}).get("live") and not origin.startswith("https://"):
        raise PydanticCustomError(
            "origin_https",
            "'{value}' is not https: live mode takes https origins only",
            {"value": value.strip()},
        )
    return origin


def usable_origins(stored: Any) -> Any:
    """Stored origins as the frame may use them: ones saved before the rule above are dropped."""
    if not isinstance(stored, list):
        return stored
    usable = [o for o in stored if isinstance(o, str) and normalize_origin(o) is not None]
    if len(usable) != len(stored):
        log.warning(
            "ignoring %d stored allowed_origins that are not origins", len(stored) - len(usable)
        )
    return usable


def live_origins(origins: list[str]) -> list[str]:
    """The origins a live session may be embedded on: the https ones."""
    return [o for o in origins if o.startswith("https://")]


def _country(value: str) -> str:
    code = value.strip().upper()
    if code not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"{value!r} is not an ISO 3166 two-letter country code")
    return code


def _unique(values: list[Any]) -> list[Any]:
    return list(dict.fromkeys(values))


WEBHOOK_URL_RULE = (
    "The webhook URL must be https://; http:// is accepted only on a loopback host "
    "(localhost, 127.0.0.1, ::1), and then only test-mode events are sent to it"
)


def is_loopback(host: str) -> bool:
    """localhost or a loopback address: a receiver on this machine, for trying webhooks out."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _webhook_url(value: str) -> str:
    parts = urlsplit(value)
    if not parts.hostname or not (
        parts.scheme == "https" or (parts.scheme == "http" and is_loopback(parts.hostname))
    ):
        raise ValueError(WEBHOOK_URL_RULE)
    return value


ThemeKey = Annotated[str, _one_of(THEME_KEYS, "theme key")]
LabelKey = Annotated[str, _one_of(LABEL_KEYS, "label")]
FieldKey = Annotated[str, _one_of(OPTIONAL_FIELDS, "optional field")]
Label = Annotated[str, StringConstraints(min_length=1, max_length=MAX_LABEL_CHARS)]


class WidgetSettings(BaseModel):
    """How the card frame looks and what it asks for."""

    model_config = ConfigDict(extra="forbid")

    theme: dict[ThemeKey, Annotated[str, AfterValidator(_css_value)]] = Field(
        default_factory=dict, description="CSS values by key: " + ", ".join(THEME_KEYS)
    )
    labels: dict[LabelKey, Label] = Field(
        default_factory=dict, description="Texts by key: " + ", ".join(LABEL_KEYS)
    )
    fields: dict[FieldKey, bool] = Field(
        default_factory=dict, description="Optional inputs: " + ", ".join(OPTIONAL_FIELDS)
    )
    allowed_origins: Annotated[
        list[Annotated[str, AfterValidator(_origin)]], AfterValidator(_unique)
    ] = Field(
        default_factory=list,
        description="Origins (scheme://host[:port]) that may frame the card form; https only "
        "when changed with a live key, and only the https ones frame a live session",
    )


class ProjectSettings(BaseModel):
    """Per-project behaviour, stored as JSON on the project row."""

    model_config = ConfigDict(extra="forbid")

    display_name: (
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
        | None
    ) = Field(None, description="What the caller hears and the widget shows (default: the slug)")
    language: Literal["en-US", "es-US"] = Field(
        "en-US", description="Prompt language; a session's own `language` wins"
    )
    require_postal_code: bool = Field(False, description="Ask for the billing ZIP code")
    accepted_brands: Annotated[list[Brand], Field(min_length=1), AfterValidator(_unique)] = Field(
        default_factory=lambda: [Brand.VISA, Brand.MASTERCARD, Brand.AMEX, Brand.DISCOVER]
    )
    authorize_only: bool = Field(
        False,
        description="Authorize without capture (`payment-authorized`); capture or void it later",
    )
    max_payment_attempts: int = Field(3, ge=1, le=MAX_PAYMENT_ATTEMPTS)
    webhook_events: Annotated[list[OptInEvent], AfterValidator(_unique)] = Field(
        default_factory=list,
        description="Opt-in webhooks besides the payment results: expired, cancelled, abandoned,"
        " refund-succeeded, refund-failed, payment-captured, payment-voided",
    )
    # ISO 3166 alpha-2 countries a callback number may be in: transfers dial out on our bill.
    callback_countries: Annotated[
        list[Annotated[str, AfterValidator(_country)]], AfterValidator(_unique)
    ] = Field(default_factory=lambda: ["US", "CA"])
    widget: WidgetSettings = Field(default_factory=WidgetSettings)


class ProjectChanges(ProjectSettings):
    """Everything `PATCH /v1/projects/{slug}` may change: the settings and the webhook URL."""

    webhook_url: (
        Annotated[str, StringConstraints(max_length=2048), AfterValidator(_webhook_url)] | None
    ) = Field(None, description="Where webhooks go; the first URL makes a `whsec_` secret")


class Configured(Protocol):
    """What holds a project's stored settings: the project, or a row of some of its columns."""

    @property
    def settings(self) -> dict[str, Any]: ...


def project_settings(project: Configured) -> ProjectSettings:
    stored = dict(project.settings or {})
    if isinstance(stored.get("widget"), dict) and "allowed_origins" in stored["widget"]:
        widget = stored["widget"]
        stored["widget"] = widget | {"allowed_origins": usable_origins(widget["allowed_origins"])}
    return ProjectSettings.model_validate(stored)


def project_document(project: Project) -> dict[str, Any]:
    """The project's changeable values as JSON: what PATCH merges into."""
    return project_settings(project).model_dump(mode="json") | {"webhook_url": project.webhook_url}


def merge_patch(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7396 JSON merge patch: objects merge, `null` removes (the default returns)."""
    merged = dict(target)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_patch(merged[key], value)
        else:
            merged[key] = value
    return merged


def flatten(document: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"widget": {"theme": {"primary": "#123"}}} -> {"widget.theme.primary": "#123"}."""
    flat: dict[str, Any] = {}
    for key, value in document.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat |= flatten(value, path + ".")
        elif not isinstance(value, Mapping):
            flat[path] = value
    return flat


def setting_keys() -> list[str]:
    """Every KEY the command line takes, as dotted paths into the document."""
    keys = [name for name in ProjectChanges.model_fields if name != "widget"]
    for name in WidgetSettings.model_fields:
        keys.append(f"widget.{name}" + (".KEY" if name != "allowed_origins" else ""))
    return keys


KEYS_HELP = (
    "keys: "
    + ", ".join(setting_keys())
    + ". Lists are comma-separated (accepted_brands=visa,amex); an empty value restores the "
    "default. widget.theme KEY: "
    + ",".join(THEME_KEYS)
    + "; widget.labels KEY: "
    + ",".join(LABEL_KEYS)
    + "; widget.fields KEY: "
    + ",".join(OPTIONAL_FIELDS)
    + "."
)


WIDGET_MAPS = ("theme", "labels", "fields")


def _list_valued(name: str) -> bool:
    return get_origin(ProjectChanges.model_fields[name].annotation) is list


def patch_from_assignments(assignments: Mapping[str, str]) -> dict[str, Any]:
    """`KEY=VALUE` words (dotted paths, comma lists, empty = default) -> a merge patch.

    Raises ValueError for a key outside the vocabulary; values are validated with the document.
    """
    patch: dict[str, Any] = {}
    for key, raw in assignments.items():
        value: Any = raw or None
        group, _, rest = key.partition(".")
        name, _, item = rest.partition(".")
        if group == "widget" and rest == "allowed_origins":
            patch.setdefault("widget", {})[name] = _split(raw)
        elif group == "widget" and name in WIDGET_MAPS and item and "." not in item:
            patch.setdefault("widget", {}).setdefault(name, {})[item] = value
        elif not rest and group != "widget" and group in ProjectChanges.model_fields:
            patch[group] = _split(raw) if raw and _list_valued(group) else value
        else:
            raise ValueError(f"unknown setting {key!r}; {KEYS_HELP}")
    return patch


def _split(raw: str) -> list[str]:
    return [item.strip() for item in raw.split(",") if item.strip()]
