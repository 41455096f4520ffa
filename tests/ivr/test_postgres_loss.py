"""PostgreSQL lost in the middle of a call: an apology and a transfer back, never a 500.

The database sits behind a TCP hop the test cuts after the caller keyed the card number (or
while the payment is at the gateway). The call's way back (kept in call state since binding)
still sends the caller to the agent, in the session's language, saying `processing` while a
charge is in flight; the session committed before the outage is intact afterwards, and a hang-up
Twilio reported during the outage still ends it `abandoned`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from api import maintenance_tasks
from ivr.callstate import CallServices, CallStates
from ivr.phone import CallResult, Phone
from ivr.transfer import signing_key, verify
from payments.jobs import ThreadJobs
from payments.services import Services
from payments.sweeps import run_once
from tests.conftest import TEST_SECRET_KEY, Clock
from tests.ivr.conftest import (
    APPROVED,
    BESIDE_THE_CALL,
    PAID_BY_KEYPAD,
    KeypadWithAnOutage,
    services_on,
)
from tests.ivr.twilio_client import sip_headers
from tests.ops.test_faults import Outage

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.parametrize("database_url", ["postgresql"], indirect=True),
]

CALLBACK = "+14155550199"
SIP_CALLBACK = "sip:agent@agents.example.com"


@pytest.fixture
def hop(database_url: str) -> Iterator[Outage]:
    url = make_url(database_url)
    outage = Outage((url.host or "127.0.0.1", url.port or 5432))
    outage.up()
    yield outage
    outage.down()


@pytest.fixture
def services(
    request: pytest.FixtureRequest,
    database_url: str,
    hop: Outage,
    clock: Clock,
    call_backend: str,
    thread_pools: list[ThreadJobs[CallStates]],
) -> Iterator[CallServices]:
    """The app's database connections all go through the hop."""
    url = make_url(database_url).set(port=hop.port).render_as_string(hide_password=False)
    redis_url = None if call_backend == "memory-threads" else request.getfixturevalue("redis_url")
    yield from services_on(url, clock, call_backend, thread_pools, redis_url)


@pytest.mark.parametrize(
    ("callback", "language", "apology"),
    [
        (CALLBACK, "en-US", "sorry"),
        (SIP_CALLBACK, "es-US", "lo sentimos"),
    ],
)
def test_the_caller_hears_an_apology_and_goes_back_to_the_agent(
    hop: Outage,
    new_session: Callable[..., dict[str, Any]],
    phone: Callable[..., Phone],
    read_session: Callable[[str], dict[str, Any]],
    callback: str,
    language: str,
    apology: str,
) -> None:
    created = new_session(callback=callback, language=language)

    result = phone(to=created["sip_uri"]).call(
        KeypadWithAnOutage(PAID_BY_KEYPAD, keyed=1, down=hop.down)
    )

    assert any(apology in line.lower() for line in result.heard), result.heard
    [dialed] = result.dialed
    assert dialed.split("?")[0] == callback
    if callback == SIP_CALLBACK:
        assert f"X-Paydial-Session={created['session_id']}" in dialed
    hop.up()
    session = read_session(created["session_id"])
    assert session["status"] in {"collecting", "abandoned"}
    assert session["card_last4"] is None, "the card never reached the gateway"


def test_a_hang_up_during_the_outage_still_ends_the_session_abandoned_never_expired(
    hop: Outage,
    services: Services,
    clock: Clock,
    new_session: Callable[..., dict[str, Any]],
    phone: Callable[..., Phone],
    read_session: Callable[[str], dict[str, Any]],
) -> None:
    created = new_session(callback=CALLBACK)

    phone(to=created["sip_uri"]).call(KeypadWithAnOutage([APPROVED + "#"], keyed=1, down=hop.down))
    hop.up()
    clock.advance(minutes=2)  # the sweeps after the outage, long before the session times out
    run_once(services, maintenance_tasks())

    session = read_session(created["session_id"])
    assert session["status"] == "abandoned"
    assert session["card_last4"] is None


@pytest.mark.parametrize("call_backend", BESIDE_THE_CALL, indirect=True)
def test_a_transfer_while_the_charge_is_at_the_gateway_says_processing_and_the_charge_lands(
    hop: Outage,
    new_session: Callable[..., dict[str, Any]],
    pay_through_an_outage: Callable[..., CallResult],
    read_session: Callable[[str], dict[str, Any]],
) -> None:
    created = new_session(callback=SIP_CALLBACK)

    result = pay_through_an_outage(created["sip_uri"], down=hop.down, up=hop.up)

    [dialed] = result.dialed
    headers = sip_headers(dialed)
    assert headers["X-Paydial-Status"] == "processing"
    assert verify(headers, signing_key(TEST_SECRET_KEY))
    assert read_session(created["session_id"])["status"] == "payment-success"
