"""Redis lost in the middle of a call: an apology and a transfer back, never a 500."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ivr.callstate import callstate_from_url
from ivr.phone import Phone
from payments.services import Services
from tests.conftest import TEST_SECRET_KEY
from tests.ivr.conftest import APPROVED, CVV, EXPIRY, wire_backend

CALLBACK = "+14155550199"
UNREACHABLE = "redis://127.0.0.1:1/0?socket_connect_timeout=0.2"


@pytest.fixture
def call_backend(services: Services, redis_url: str) -> Iterator[str]:
    """Call state in Redis (this test is about losing it)."""
    yield from wire_backend(services, "redis-inline", redis_url)


class RedisDiesAfterTheCardNumber:
    """Keys the card number; then Redis becomes unreachable; then keys the rest."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.entries = [APPROVED + "#", EXPIRY, CVV, "1"]

    def press(self, prompt: list[str]) -> str | None:
        if len(self.entries) == 3:
            self.services.callstates = callstate_from_url(UNREACHABLE, TEST_SECRET_KEY)
        return self.entries.pop(0) if self.entries else None


def test_the_caller_hears_an_apology_and_goes_back_without_a_charge(
    services: Services,
    new_session: Callable[..., dict[str, Any]],
    phone: Callable[..., Phone],
    read_session: Callable[[str], dict[str, Any]],
) -> None:
    created = new_session(callback=CALLBACK)
    result = phone(to=created["sip_uri"]).call(RedisDiesAfterTheCardNumber(services))

    assert any("sorry" in line.lower() for line in result.heard), result.heard
    assert result.dialed == [CALLBACK]
    session = read_session(created["session_id"])
    assert session["card_last4"] is None, "the card never reached the gateway"
    assert session["status"] in {"collecting", "abandoned"}
