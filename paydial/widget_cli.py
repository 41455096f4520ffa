"""`paydial widget set SLUG KEY=VALUE…`: a project's widget theme, labels, fields and origins."""

from __future__ import annotations

import argparse
import json

from paydial.command import CommandError, parse_assignments, services_from_env
from payments.accounts import get_project_by_slug
from payments.project_settings import (
    KEYS_HELP,
    project_settings,
    update_project_settings,
    widget_settings_with,
)


def cmd_widget_set(args: argparse.Namespace) -> None:
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
