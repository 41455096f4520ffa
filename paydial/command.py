"""What every `paydial` subcommand shares: its operator error, its Services, KEY=VALUE words.

Imports stay light here and in paydial/cli.py: `paydial --help` and `paydial call` must start in
well under half a second, so each command imports the core (SQLAlchemy, the gateway SDKs,
Alembic) only when it runs.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ivr.callstate import CallServices


class CommandError(Exception):
    """A message for the operator; printed to stderr, exit status 1."""


@functools.cache
def services_from_env() -> CallServices:
    """The one Services of this command run; main() disposes of its connections at the end."""
    from ivr.wiring import build_services
    from payments.settings import Settings

    return build_services(Settings().with_local_secrets())


def parse_assignments(pairs: Sequence[str]) -> dict[str, str]:
    """KEY=VALUE words -> a dict; a word without '=' is an operator error."""
    values: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise CommandError(f"expected KEY=VALUE, got {pair.split('=')[0]!r}")
        values[name] = value
    return values
