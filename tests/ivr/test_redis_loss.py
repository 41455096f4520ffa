"""Redis lost in the middle of a call: an apology and a transfer back, never a 500.

A hang-up Twilio reports while Redis is down still ends the session `abandoned`, and a caller
handed back while the charge is at the gateway goes back as `processing`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from ivr.callstate import CallServices, callstate_from_url
from ivr.phone import CallResult, Phone
from ivr.transfer import signing_key, verify
from payments.services import Services
from tests.conftest import TEST_SECRET_KEY
from tests.ivr.conftest import APPROVED, PAID_BY_KEYPAD, KeypadWithAnOutage
from tests.ivr.twilio_client import sip_headers

CALLBACK = "+14155550199"
UNREACHABLE = "redis://127.0.0.1:1/0?socket_connect_timeout=0.2"


def redis_goes(services: CallServices) -> Callable[[], object]:
    """What takes Redis away from the web requests from then on: their call state points at a
    closed port (a payment job already running keeps the call state it started with)."""
    unreachable = callstate_from_url(UNREACHABLE, TEST_SECRET_KEY)
    return lambda: setattr(services, "callstates", unreachable)


@pytest.fixture
def call_backend(request: pytest.FixtureRequest) -> str:
    """Call state in Redis (this test is about losing it); jobs inline unless a test says."""
    kind: str = getattr(request, "param", "redis-inline")
    return kind


def test_the_caller_hears_an_apology_and_goes_back_without_a_charge(
    services: Services,
    new_session: Callable[..., dict[str, Any]],
    phone: Callable[..., Phone],
    read_session: Callable[[str], dict[str, Any]],
) -> None:
    created = new_session(callback=CALLBACK)
    result = phone(to=created["sip_uri"]).call(
        KeypadWithAnOutage(PAID_BY_KEYPAD, keyed=1, down=redis_goes(services))
    )

    assert any("sorry" in line.lower() for line in result.heard), result.heard
    assert result.dialed == [CALLBACK]
    session = read_session(created["session_id"])
    assert session["card_last4"] is None, "the card never reached the gateway"
    assert session["status"] in {"collecting", "abandoned"}


def test_a_hang_up_while_redis_is_down_ends_the_session_abandoned_at_once(
    services: Services,
    new_session: Callable[..., dict[str, Any]],
    phone: Callable[..., Phone],
    read_session: Callable[[str], dict[str, Any]],
) -> None:
    created = new_session(callback=CALLBACK)

    phone(to=created["sip_uri"]).call(
        KeypadWithAnOutage([APPROVED + "#"], keyed=1, down=redis_goes(services))
    )

    assert read_session(created["session_id"])["status"] == "abandoned"


@pytest.mark.parametrize("call_backend", ["redis-threads"], indirect=True)
def test_a_transfer_while_the_charge_is_at_the_gateway_says_processing_and_the_charge_lands(
    services: CallServices,
    new_session: Callable[..., dict[str, Any]],
    pay_through_an_outage: Callable[..., CallResult],
    read_session: Callable[[str], dict[str, Any]],
) -> None:
    created = new_session(callback="sip:agent@agents.example.com")
    reachable = services.callstates

    # Redis goes for the web requests as the charge starts (the job keeps its own connection).
    result = pay_through_an_outage(
        created["sip_uri"],
        down=redis_goes(services),
        up=lambda: setattr(services, "callstates", reachable),
    )

    [dialed] = result.dialed
    headers = sip_headers(dialed)
    assert headers["X-Paydial-Status"] == "processing"
    assert verify(headers, signing_key(TEST_SECRET_KEY))
    assert read_session(created["session_id"])["status"] == "payment-success"
