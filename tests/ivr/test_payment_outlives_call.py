"""Issue 13 item 1: a payment whose caller stopped holding still runs to a result, or times out.

The payment job waits on the real RQ queue (Redis call state) while the caller reaches the hold
limit or hangs up; then a worker takes it, or the card's time runs out first. Each test runs on
SQLite and PostgreSQL; the merchant's part is the outbox event the payment's end records.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import select

from ivr.callstate import CARD_TTL, CallServices
from ivr.charge import run_payment_job
from ivr.hangup import GRACE, close_vanished_calls
from ivr.phone import Phone, ScriptedKeypad
from ivr.transfer import STATUS
from payments.jobs import run_worker
from payments.services import Services
from payments.store import WebhookEvent
from tests.conftest import PUBLIC_URL, Clock, attempt_rows, count_gateway_calls, set_project
from tests.ivr.conftest import APPROVED, CVV, DECLINED, EXPIRY
from tests.ivr.test_call_e2e import _enter_until_confirm, _hold_until_result
from tests.ivr.twilio_client import sip_headers, twiml

pytestmark = pytest.mark.parametrize("call_backend", ["redis-rq"], indirect=True)

SIP_CALLBACK = "sip:agent@agents.example.com"
HOLD_LIMIT = (
    "Your payment is still being processed. "
    "The merchant will be told the result and will confirm it with you."
)


@pytest.fixture
def gateway_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    return count_gateway_calls(monkeypatch)


@pytest.fixture
def queue(services: Services, merchant: dict[str, str]) -> Iterator[Callable[[], None]]:
    """Payments wait on the real RQ queue (call_backend); calling what this yields lets a worker
    run them."""
    set_project(services, "acme", webhook_url="http://127.0.0.1:9/hooks")
    yield lambda: run_worker(services, {}, pay=run_payment_job, burst=True)


def events(services: Services, session_id: str) -> list[str]:
    """The merchant webhooks recorded for the session, by type."""
    with services.db.transaction() as tx:
        return list(
            tx.scalars(select(WebhookEvent.type).where(WebhookEvent.session_id == session_id))
        )


def card_left(services: CallServices, call: Phone) -> bool:
    return services.callstates.take_card(call.call_sid) is not None


@pytest.fixture
def hung_up(
    queue: Callable[[], None],
    new_session: Callable[..., dict[str, Any]],
    phone: Callable[..., Phone],
) -> tuple[str, Phone]:
    """A caller who keyed a card, pressed 1 (the job is queued, the caller hears the hold) and
    hung up; the session id and the call."""
    created = new_session()
    call = phone(to=created["sip_uri"])
    url, form = _enter_until_confirm(call, created)
    assert twiml(call.post(url, form).body).find("Redirect") is not None
    call.post(f"{PUBLIC_URL}/twilio/status", {"CallDuration": "42"}, status="completed")
    return created["session_id"], call


def test_a_queued_payment_whose_caller_reached_the_hold_limit_still_charges_once(
    queue: Callable[[], None],
    new_session: Callable[..., dict[str, Any]],
    phone: Callable[..., Phone],
    read_session: Callable[[str], dict[str, Any]],
    services: Services,
    gateway_calls: list[str],
) -> None:
    created = new_session(callback=SIP_CALLBACK)
    sid = created["session_id"]
    # no worker runs meanwhile: the caller holds to the limit, is handed back and hangs up
    result = phone(to=created["sip_uri"]).call(ScriptedKeypad([APPROVED + "#", EXPIRY, CVV, "1"]))
    queue()

    assert gateway_calls == [f"pd-{sid}-1"]
    assert read_session(sid)["status"] == "payment-success"
    assert events(services, sid) == ["payment-success"]
    assert HOLD_LIMIT in result.heard  # what the caller heard came true
    assert sip_headers(result.dialed[0])[STATUS] == "processing"


def test_a_declined_payment_whose_caller_left_ends_payment_failed_and_the_merchant_is_told(
    queue: Callable[[], None],
    new_session: Callable[..., dict[str, Any]],
    phone: Callable[..., Phone],
    read_session: Callable[[str], dict[str, Any]],
    services: Services,
) -> None:
    created = new_session()  # two more attempts allowed, but nobody is left to make them
    sid = created["session_id"]
    result = phone(to=created["sip_uri"]).call(ScriptedKeypad([DECLINED + "#", EXPIRY, CVV, "1"]))
    queue()

    session = read_session(sid)
    assert session["status"] == "payment-failed"  # not abandoned: the merchant hears of it
    assert session["error"]["code"] == "card_declined"
    assert events(services, sid) == ["payment-failed"]
    assert HOLD_LIMIT in result.heard


def test_a_webhook_twilio_repeats_after_the_hold_limit_leaves_the_card_to_its_job(
    queue: Callable[[], None],
    new_session: Callable[..., dict[str, Any]],
    phone: Callable[..., Phone],
    read_session: Callable[[str], dict[str, Any]],
    gateway_calls: list[str],
) -> None:
    created = new_session()
    call = phone(to=created["sip_uri"])
    url, form = _enter_until_confirm(call, created)
    assert HOLD_LIMIT in _hold_until_result(call, call.post(url, form).body)
    apology = twiml(call.post(f"{PUBLIC_URL}/twilio/result").body)  # the last redirect, again
    assert apology.find("Hangup") is not None
    call.post(f"{PUBLIC_URL}/twilio/status", {"CallDuration": "42"}, status="completed")
    queue()

    assert gateway_calls == [f"pd-{created['session_id']}-1"]
    assert read_session(created["session_id"])["status"] == "payment-success"


def test_a_queued_payment_whose_caller_hung_up_still_charges_once(
    hung_up: tuple[str, Phone],
    queue: Callable[[], None],
    read_session: Callable[[str], dict[str, Any]],
    services: Services,
    gateway_calls: list[str],
    clock: Clock,
) -> None:
    sid, _ = hung_up
    clock.advance(seconds=GRACE.total_seconds())
    close_vanished_calls(services)  # the sweep leaves it to the payment too

    assert read_session(sid)["status"] == "collecting"
    queue()

    assert gateway_calls == [f"pd-{sid}-1"]
    assert read_session(sid)["status"] == "payment-success"
    assert events(services, sid) == ["payment-success"]
    assert attempt_rows(services, sid) == [(1, "succeeded")]


def test_a_payment_whose_job_never_came_in_the_cards_time_fails_with_processing_timeout(
    hung_up: tuple[str, Phone],
    queue: Callable[[], None],
    read_session: Callable[[str], dict[str, Any]],
    services: Services,
    gateway_calls: list[str],
    clock: Clock,
) -> None:
    sid, call = hung_up
    clock.advance(seconds=CARD_TTL)
    close_vanished_calls(services)

    session = read_session(sid)
    assert session["status"] == "payment-failed"
    assert session["error"]["code"] == "processing_timeout"
    assert events(services, sid) == ["payment-failed"]
    assert not card_left(services, call)
    queue()  # the job turns up after all

    assert gateway_calls == []
    assert read_session(sid)["status"] == "payment-failed"
    assert events(services, sid) == ["payment-failed"]
    assert attempt_rows(services, sid) == [(1, "failed")]
