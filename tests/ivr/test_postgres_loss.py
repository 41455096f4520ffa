"""PostgreSQL lost in the middle of a call: an apology and a transfer back, never a 500.

The database sits behind a TCP hop the test cuts after the caller keyed the card number. The
call's way back (kept in call state since binding) still sends the caller to the agent, in the
session's language, and the session committed before the outage is intact afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from ivr.phone import Phone
from payments.services import Services
from payments.store import Database
from tests.conftest import Clock, make_settings
from tests.ivr.conftest import APPROVED, CVV, EXPIRY
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
def services(database_url: str, hop: Outage, clock: Clock) -> Iterator[Services]:
    """The app's database connections all go through the hop."""
    url = make_url(database_url).set(port=hop.port).render_as_string(hide_password=False)
    db = Database(url)
    yield Services(settings=make_settings(url), db=db, clock=clock)
    db.dispose()


class DatabaseDiesAfterTheCardNumber:
    def __init__(self, hop: Outage) -> None:
        self.hop = hop
        self.entries = [APPROVED + "#", EXPIRY, CVV, "1"]

    def press(self, prompt: list[str]) -> str | None:
        if len(self.entries) == 3:
            self.hop.down()
        return self.entries.pop(0) if self.entries else None


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

    result = phone(to=created["sip_uri"]).call(DatabaseDiesAfterTheCardNumber(hop))

    assert any(apology in line.lower() for line in result.heard), result.heard
    [dialed] = result.dialed
    assert dialed.split("?")[0] == callback
    if callback == SIP_CALLBACK:
        assert f"X-Paydial-Session={created['session_id']}" in dialed
    hop.up()
    session = read_session(created["session_id"])
    assert session["status"] in {"collecting", "abandoned"}
    assert session["card_last4"] is None, "the card never reached the gateway"
