"""The core's error tree; api/errors.py and the TwiML error template are its only renderers.

PaydialError
├── NotFound          the thing does not exist, or is outside the caller's reach
├── Conflict          the thing exists but its state forbids the change
└── InvalidInput      a value the schema allowed but the business rules do not
"""

from __future__ import annotations


class PaydialError(Exception):
    """Base of every error the core raises on purpose."""


class NotFound(PaydialError):
    pass


class Conflict(PaydialError):
    pass


class InvalidInput(PaydialError):
    """Carries the field path so the API can answer with a 422 `loc`."""

    def __init__(self, loc: tuple[str | int, ...], message: str, kind: str = "value_error") -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message
        self.kind = kind
