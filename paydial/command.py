"""What every `paydial` subcommand shares: its operator error, its Services, KEY=VALUE words."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

from payments.services import Services
from payments.settings import Settings


class CommandError(Exception):
    """A message for the operator; printed to stderr, exit status 1."""


@functools.cache
def services_from_env() -> Services:
    """The one Services of this command run; main() disposes of its connections at the end."""
    return Services.from_settings(Settings().with_local_secrets(Path.cwd()))


def parse_assignments(pairs: Sequence[str]) -> dict[str, str]:
    """KEY=VALUE words -> a dict; a word without '=' is an operator error."""
    values: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise CommandError(f"expected KEY=VALUE, got {pair.split('=')[0]!r}")
        values[name] = value
    return values
