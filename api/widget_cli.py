"""`paydial widget set SLUG KEY=VALUE…`: a project's widget theme, labels, fields and origins."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Mapping

from api.widget import LABEL_KEYS, OPTIONAL_FIELDS, THEME_KEYS, normalize_origin
from ivr.accounts import (
    WidgetSettings,
    get_project_by_slug,
    project_settings,
    update_project_settings,
)

# The same rule frame.js applies before a value becomes a CSS custom property.
SAFE_CSS_VALUE = re.compile(r"^[#(),.%\w\s-]{1,64}$")
MAX_LABEL_CHARS = 80
BOOLEANS = {"true": True, "yes": True, "on": True, "1": True,
            "false": False, "no": False, "off": False, "0": False}
KEYS_HELP = (
    "keys: theme.{" + ",".join(THEME_KEYS) + "}=VALUE, labels.{" + ",".join(LABEL_KEYS)
    + "}=TEXT, fields.{" + ",".join(OPTIONAL_FIELDS) + "}=true|false, "
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
        raise ValueError(f"allowed_origins: {value.strip()!r} is not an origin like https://shop.example")
    return origin


def cmd_widget_set(args: argparse.Namespace) -> None:
    # paydial.cli registers this command, so it is imported here, once it is fully loaded.
    from paydial.cli import CommandError, parse_assignments, services_from_env

    changes = parse_assignments(args.values)
    services = services_from_env()
    try:
        with services.db.transaction() as tx:
            project = get_project_by_slug(tx, args.slug)
            try:
                widget = widget_settings_with(project_settings(project).widget, changes)
            except ValueError as error:
                raise CommandError(str(error)) from None
            update_project_settings(project, widget=widget.model_dump())
    finally:
        services.db.dispose()
    print(json.dumps(widget.model_dump(), indent=2))


def add_widget_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    widget = sub.add_parser("widget", help="the chat/web card widget").add_subparsers(required=True)
    widget_set = widget.add_parser(
        "set", help="change a project's widget settings", description=KEYS_HELP
    )
    widget_set.add_argument("slug")
    widget_set.add_argument("values", nargs="+", metavar="KEY=VALUE")
    widget_set.set_defaults(func=cmd_widget_set)
