"""The core's error tree; api/errors.py and the TwiML error template are its only renderers.

PaydialError                          raised on purpose by the core
├── NotFound                          absent, or outside the caller's reach
├── Conflict                          present, but its state forbids the change
├── InvalidInput                      allowed by the schema, refused by the rules
├── GatewayUnreachable                a check the gateway must answer first went unanswered
├── VelocityLimited (velocity.py)     too many failures: nothing goes to the gateway
│   ├── CardLocked                    ... for this card, whoever tries it
│   └── CallerLockedOut               ... for this phone number, before any card entry
├── SignInThrottled (users.py)        too many failed dashboard sign-ins: wait, right or not
└── ChargesPaused (breaker.py)        a project's widget charges, paused after many declines
gateways.GatewayError
├── GatewayUnavailableAfterCheck (attempts.py)  timed out; the gateway has no such payment
└── NeverReceived (refunds.py)        a refund/capture/void timed out; the gateway has no record
DecryptionError (crypto.py)           sealed data that is not ours, or was tampered with
RuntimeError
└── MissingSecrets (local.py)         production mode without PAYDIAL_SECRET_KEY/TWILIO_AUTH_TOKEN
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


class GatewayUnreachable(PaydialError):
    """The gateway could not be asked a read-only question the request depends on (is this payment
    settled?); nothing was recorded, so the request may simply be made again."""
