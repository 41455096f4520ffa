"""Exactly-once money: attempts nobody saw finish are settled at the gateway, never re-charged."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import ClassVar

import pytest
from sqlalchemy import select

import gateways
from gateways.base import (
    Card,
    GatewayOutcomeUnknown,
    GatewayUnavailable,
    LookUp,
    PaymentGateway,
    PaymentRequest,
    PaymentResult,
    processor_fields,
)
from payments.accounts import get_project_by_slug
from payments.attempts import pay
from payments.credentials import CREDENTIALS_PURPOSE, set_credentials
from payments.errors import Conflict
from payments.model import Environment, Gateway
from payments.reconcile import GIVE_UP_AFTER, reconcile_due
from payments.services import Services
from payments.sessions import load_session
from payments.store import PaymentAttempt, WebhookEvent
from payments.sweeps import CORE_TASKS, run_once

CARD = Card(number="4242424242424242", exp_month=12, exp_year=2030, cvc="123")


class WorkerKilled(BaseException):
    """The process died mid-call: nothing in our code gets to handle it."""


@dataclass
class Ledger:
    """The gateway's side of the story: what it charged, and how its answers get lost."""

    charges: dict[str, PaymentResult] = field(default_factory=dict)
    calls: int = 0
    lose_answer: bool = False  # charged, but the answer times out on the way back
    drop_request: bool = False  # the request never arrived: nothing charged, then a timeout
    kill_worker: bool = False  # charged, and our worker dies before it reads the answer
    reachable: bool = True  # whether look-ups get through
    looked_up: list[LookUp] = field(default_factory=list)  # what reconciliation asked for


class LedgerGateway:
    """A fake at our gateway port, standing in for a live gateway with a shared ledger."""

    name = "stripe"
    required_credentials: ClassVar[tuple[str, ...]] = ("secret_key",)
    ledger: ClassVar[Ledger] = Ledger()

    @classmethod
    def from_credentials(
        cls, credentials: Mapping[str, str], *, timeout: float, environment: str = "test"
    ) -> PaymentGateway:
        return cls()

    def charge(self, request: PaymentRequest) -> PaymentResult:
        ledger = self.ledger
        ledger.calls += 1
        if ledger.drop_request:
            raise GatewayOutcomeUnknown("stripe: read timed out")
        result = ledger.charges.setdefault(
            request.idempotency_key,
            PaymentResult(
                "captured",
                f"pi_{len(ledger.charges)}",
                request.card.brand,
                request.card.last4,
                processor_fields("stripe", stripe_payment_intent_id="pi_x"),
            ),
        )
        if ledger.kill_worker:
            raise WorkerKilled
        if ledger.lose_answer:
            raise GatewayOutcomeUnknown("stripe: read timed out")
        return result

    authorize = tokenize = charge

    def reconcile(self, look_up: LookUp) -> PaymentResult | None:
        self.ledger.looked_up.append(look_up)
        if not self.ledger.reachable:
            raise GatewayUnavailable("stripe: connection refused")
        return self.ledger.charges.get(look_up.idempotency_key)


@pytest.fixture
def ledger(
    monkeypatch: pytest.MonkeyPatch, services: Services, merchant: dict[str, str]
) -> Iterator[Ledger]:
    """acme charges live through the ledger gateway."""
    monkeypatch.setitem(gateways.GATEWAYS, "stripe", LedgerGateway)
    monkeypatch.setattr(LedgerGateway, "ledger", Ledger())
    with services.db.transaction() as tx:
        set_credentials(
            tx,
            get_project_by_slug(tx, "acme"),
            Gateway.STRIPE,
            Environment.LIVE,
            {"secret_key": "sk_live_x"},
            sealer=services.sealer(CREDENTIALS_PURPOSE),
            now=services.clock(),
        )
    yield LedgerGateway.ledger


@pytest.fixture
def live_session(new_session: Callable[..., str]) -> str:
    return new_session("live")


def status_of(services: Services, session_id: str) -> str:
    with services.db.transaction() as tx:
        return load_session(tx, session_id, now=services.clock()).status


def attempt_states(services: Services, session_id: str) -> list[str]:
    with services.db.transaction() as tx:
        return list(
            tx.scalars(
                select(PaymentAttempt.state)
                .where(PaymentAttempt.session_id == session_id)
                .order_by(PaymentAttempt.number)
            )
        )


def test_a_timed_out_charge_holds_the_session_until_reconciliation_finds_it(
    services: Services, ledger: Ledger, live_session: str, hook_secret: str
) -> None:
    ledger.lose_answer, ledger.reachable = True, False
    outcome = pay(services, live_session, CARD)
    assert not outcome.approved and outcome.error_code == "outcome_unknown"
    assert outcome.attempts_remaining == 0
    assert status_of(services, live_session) == "collecting"
    with pytest.raises(Conflict):  # no second attempt while the first may have charged
        pay(services, live_session, CARD)

    services.clock.advance(hours=2)  # type: ignore[attr-defined]  # past expires_at
    run_once(services, {"expire_sessions": CORE_TASKS["expire_sessions"]})
    assert status_of(services, live_session) == "collecting"  # not expired while unresolved

    ledger.reachable = True
    assert reconcile_due(services) == 1
    assert status_of(services, live_session) == "payment-success"
    assert attempt_states(services, live_session) == ["succeeded"]
    assert ledger.calls == 1 and len(ledger.charges) == 1
    with services.db.transaction() as tx:
        assert [e.type for e in tx.scalars(select(WebhookEvent))] == ["payment-success"]
    assert reconcile_due(services) == 0


def test_a_charge_the_gateway_never_received_fails_and_the_caller_may_try_again(
    services: Services, ledger: Ledger, live_session: str
) -> None:
    ledger.drop_request, ledger.reachable = True, False
    pay(services, live_session, CARD)
    assert attempt_states(services, live_session) == ["unknown"]
    ledger.reachable = True
    reconcile_due(services)
    assert attempt_states(services, live_session) == ["failed"]
    assert status_of(services, live_session) == "collecting"

    ledger.drop_request = False
    assert pay(services, live_session, CARD).approved
    assert len(ledger.charges) == 1
    assert status_of(services, live_session) == "payment-success"


def test_a_worker_killed_after_the_charge_is_settled_from_the_gateway_not_charged_again(
    services: Services, ledger: Ledger, live_session: str
) -> None:
    ledger.kill_worker = True
    with pytest.raises(WorkerKilled):
        pay(services, live_session, CARD)
    assert attempt_states(services, live_session) == ["pending"]
    ledger.kill_worker = False
    with pytest.raises(Conflict):  # Twilio retries the confirm webhook: still one attempt
        pay(services, live_session, CARD, attempt=1)

    assert reconcile_due(services) == 0  # it might still be running: not yet stale
    timeout = services.settings.gateway_timeout_seconds
    services.clock.advance(seconds=timeout * 3)  # type: ignore[attr-defined]
    assert reconcile_due(services) == 1
    assert status_of(services, live_session) == "payment-success"
    assert ledger.calls == 1 and len(ledger.charges) == 1
    with services.db.transaction() as tx:  # looked up from the attempt's row: the card is gone
        amount = load_session(tx, live_session, now=services.clock()).amount_cents
    assert ledger.looked_up == [LookUp(f"pd-{live_session}-1", amount, "visa", "4242")]


def test_look_ups_back_off_and_give_up_after_a_day_telling_the_merchant(
    services: Services, ledger: Ledger, live_session: str, hook_secret: str
) -> None:
    ledger.lose_answer, ledger.reachable = True, False
    pay(services, live_session, CARD)
    start = services.clock()
    checks = []
    while status_of(services, live_session) == "collecting":
        with services.db.transaction() as tx:
            attempt = tx.scalars(select(PaymentAttempt)).one()
            due = attempt.next_check_at
        assert due is not None
        services.clock.now = max(due, services.clock())  # type: ignore[attr-defined]
        checks.append(services.clock() - start)
        reconcile_due(services)
        assert services.clock() - start < GIVE_UP_AFTER + timedelta(hours=2)
    gaps = [b - a for a, b in itertools.pairwise(checks)]
    assert gaps[1] > gaps[0] and max(gaps) <= timedelta(hours=1)
    assert status_of(services, live_session) == "payment-failed"
    with services.db.transaction() as tx:
        session = load_session(tx, live_session, now=services.clock())
        assert session.error_code == "outcome_unconfirmed"
        events = [e.type for e in tx.scalars(select(WebhookEvent))]
    assert events == ["payment-failed"]
    assert ledger.calls == 1


def test_a_timeout_the_immediate_look_up_can_answer_is_settled_at_once(
    services: Services, ledger: Ledger, live_session: str
) -> None:
    ledger.lose_answer = True
    assert pay(services, live_session, CARD).approved
    assert attempt_states(services, live_session) == ["succeeded"]
    assert ledger.calls == 1


def test_a_settled_attempt_is_not_looked_up_or_announced_again(
    services: Services, ledger: Ledger, live_session: str, hook_secret: str
) -> None:
    ledger.lose_answer, ledger.reachable = True, False
    pay(services, live_session, CARD)
    ledger.reachable = True
    assert reconcile_due(services) == 1
    assert reconcile_due(services) == 0  # claimed and settled: nothing left for a second one
    with services.db.transaction() as tx:
        assert len(tx.scalars(select(WebhookEvent)).all()) == 1
