"""Builders and tiny HTTP helpers the gateway tests share (fixtures live in conftest.py)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from werkzeug import Request, Response

from gateways.base import Card, CardholderAddress, LookUp, PaymentRequest

# Short client timeouts against a server that stalls longer keep the timeout tests fast.
CLIENT_TIMEOUT = 0.5
STALL_SECONDS = 1.2
CVC = "987"


def make_request(
    number: str = "4242424242424242",
    *,
    amount_cents: int = 1999,
    cvc: str = CVC,
    key: str | None = None,
    billing: bool = True,
    postal_code: str | None = "94107",
    description: str | None = "Order 1001",
) -> PaymentRequest:
    """A request with a fresh idempotency key, as the core would derive one per attempt."""
    return PaymentRequest(
        amount_cents=amount_cents,
        currency="USD",
        card=Card(number, 12, 2031, cvc),
        idempotency_key=key or f"pd-sess{uuid.uuid4().hex[:12]}-1",
        description=description,
        billing_address=CardholderAddress(
            "1 Main St", "Springfield", "IL", "62701", first_name="Ada", last_name="Lovelace"
        )
        if billing
        else None,
        postal_code=postal_code,
        session_id="sess_test",
    )


def make_look_up(key: str, *, amount_cents: int = 1999) -> LookUp:
    """What reconciliation has of an attempt made with `make_request`'s default card: no card."""
    return LookUp(key, amount_cents, "visa", "4242")


def stall(response: Response) -> Callable[[Request], Response]:
    """A handler that answers only after the client's timeout has passed."""

    def handler(request: Request) -> Response:
        time.sleep(STALL_SECONDS)
        return response

    return handler


def recorder(
    answer: Callable[[Request], Response],
) -> tuple[list[dict[str, Any]], Callable[[Request], Response]]:
    """Wrap a handler so the test can assert on what the SDK sent."""
    seen: list[dict[str, Any]] = []

    def handler(request: Request) -> Response:
        seen.append(
            {
                "path": request.path,
                "headers": dict(request.headers),
                "body": request.get_data(),
            }
        )
        return answer(request)

    return seen, handler
