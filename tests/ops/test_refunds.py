"""After the payment through the API: refunds, captures and voids, exactly once, with webhooks.

Sessions are paid through the core (`payments.attempts.pay`) on the simulated gateway; the
operations the API records wait in the queue (tests/ops/conftest.py `QueuedJobs`) until the test
runs them, as a worker would.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any, ClassVar

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

import gateways
from gateways.base import (
    Card,
    GatewayOutcomeUnknown,
    GatewayUnavailable,
    NotRefundable,
    ReversalResult,
)
from gateways.simulator import SimulatorGateway
from payments.attempts import pay
from payments.backoff import next_pause
from payments.refunds import MAX_LOOK_UPS, reconcile_operations, run_operation
from payments.services import Services
from payments.store import MoneyOperation, WebhookEvent
from tests.conftest import Clock, set_project
from tests.ops.conftest import VOICE_SESSION, QueuedJobs

APPROVED = Card(number="4242424242424242", exp_month=12, exp_year=2030, cvc="123")


class CountingSimulator(SimulatorGateway):
    """The simulator, counting the refunds, captures and voids it is sent."""

    sent: ClassVar[list[tuple[str, str, int | None]]] = []  # (kind, idempotency key, amount)
    lose_answers = False  # do the work, then time out (the answer is lost)
    lookups_fail = 0  # how many look-ups fail before the gateway can say
    unsettled = False  # refunds need settlement, which has not happened yet

    def refund(self, reference: str, amount_cents: int, *, idempotency_key: str) -> ReversalResult:
        self.sent.append(("refund", idempotency_key, amount_cents))
        if self.unsettled:
            raise NotRefundable("simulated: refunds only settled payments")
        result = super().refund(reference, amount_cents, idempotency_key=idempotency_key)
        if self.lose_answers:
            raise GatewayOutcomeUnknown("simulated timeout after the refund was made")
        return result

    def capture(self, reference: str, amount_cents: int, *, idempotency_key: str) -> ReversalResult:
        self.sent.append(("capture", idempotency_key, amount_cents))
        return super().capture(reference, amount_cents, idempotency_key=idempotency_key)

    def void(self, reference: str, *, idempotency_key: str) -> ReversalResult:
        self.sent.append(("void", idempotency_key, None))
        return super().void(reference, idempotency_key=idempotency_key)

    def find_reversal(self, kind: Any, reference: str, *, idempotency_key: str) -> Any:
        if CountingSimulator.lookups_fail:
            CountingSimulator.lookups_fail -= 1
            raise GatewayUnavailable("simulated outage during the look-up")
        return super().find_reversal(kind, reference, idempotency_key=idempotency_key)


@pytest.fixture
def simulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[CountingSimulator]]:
    CountingSimulator.sent = []
    CountingSimulator.lose_answers = False
    CountingSimulator.lookups_fail = 0
    CountingSimulator.unsettled = False
    monkeypatch.setattr(gateways, "SimulatorGateway", CountingSimulator)
    yield CountingSimulator


@pytest.fixture
def auth(merchant: dict[str, str]) -> dict[str, str]:
    return {"Authorization": merchant["test"]}


@pytest.fixture
def paid(
    services: Services, new_session: Callable[..., str], simulator: type[CountingSimulator]
) -> Callable[..., str]:
    """A session paid (or authorized, with `authorize_only`) by card; returns its id."""

    def make(**fields: Any) -> str:
        session_id = new_session(**fields)
        assert pay(services, session_id, APPROVED, attempt=1).approved
        return session_id

    return make


def work(services: Services, queued: QueuedJobs) -> None:
    """What a worker does with the queued operations."""
    while queued.operations:
        run_operation(services, queued.operations.pop(0))


def session_of(client: FlaskClient, auth: dict[str, str], session_id: str) -> dict[str, Any]:
    body: dict[str, Any] = client.get(f"/v1/sessions/{session_id}", headers=auth).get_json()
    return body


def test_half_a_payment_is_refunded_then_the_rest_and_then_nothing_is_left(
    client: FlaskClient,
    services: Services,
    queued: QueuedJobs,
    auth: dict[str, str],
    paid: Callable[..., str],
    simulator: type[CountingSimulator],
) -> None:
    session_id = paid()
    half = client.post(
        f"/v1/sessions/{session_id}/refunds",
        json={"amount": "12.50", "reason": "one ticket returned"},
        headers=auth,
    )
    assert half.status_code == 201, half.get_json()
    refund = half.get_json()
    assert (refund["amount"], refund["status"], refund["reason"]) == (
        "12.50",
        "pending",
        "one ticket returned",
    )
    assert refund["refund_id"].startswith("rf_") and refund["transaction_id"].startswith("pi_sim")
    work(services, queued)

    session = session_of(client, auth, session_id)
    assert session["status"] == "payment-success"  # the status stays terminal
    assert (session["captured_amount"], session["amount_refunded"]) == ("25.00", "12.50")
    [done] = session["refunds"]
    assert done["status"] == "succeeded" and done["gateway_refund_id"].startswith("re_sim")

    rest = client.post(f"/v1/sessions/{session_id}/refunds", headers=auth)  # no body: all left
    assert rest.status_code == 201 and rest.get_json()["amount"] == "12.50"
    work(services, queued)
    assert session_of(client, auth, session_id)["amount_refunded"] == "25.00"
    again = client.post(f"/v1/sessions/{session_id}/refunds", json={}, headers=auth)
    assert again.status_code == 409
    assert simulator.sent == [
        ("refund", f"pd-{session_id}-refund-1", 1250),
        ("refund", f"pd-{session_id}-refund-2", 1250),
    ]
    listed = client.get(f"/v1/sessions/{session_id}/refunds", headers=auth).get_json()["data"]
    assert [r["status"] for r in listed] == ["succeeded", "succeeded"]


def test_refunding_more_than_was_captured_is_a_422_naming_what_is_left(
    client: FlaskClient, auth: dict[str, str], paid: Callable[..., str]
) -> None:
    session_id = paid()
    response = client.post(
        f"/v1/sessions/{session_id}/refunds", json={"amount": "25.01"}, headers=auth
    )
    assert response.status_code == 422
    [error] = response.get_json()["detail"]
    assert error["loc"] == ["body", "amount"] and error["type"] == "refund_exceeds_captured"
    assert "25.00" in error["msg"]


@pytest.mark.parametrize(
    "body", [{"amount": "0"}, {"amount": "-1"}, {"amount": "1.001"}, {"amount": 5, "x": 1}]
)
def test_bad_refund_bodies_are_422s(
    client: FlaskClient, auth: dict[str, str], paid: Callable[..., str], body: dict[str, Any]
) -> None:
    session_id = paid()
    response = client.post(f"/v1/sessions/{session_id}/refunds", json=body, headers=auth)
    assert response.status_code == 422
    assert response.get_json()["detail"][0]["loc"][0] == "body"


def test_a_tokenize_session_or_an_unpaid_one_has_nothing_to_refund(
    client: FlaskClient,
    services: Services,
    auth: dict[str, str],
    simulator: type[CountingSimulator],
    new_session: Callable[..., str],
) -> None:
    created = client.post(
        "/v1/sessions", json=VOICE_SESSION | {"mode": "tokenize", "amount": "0"}, headers=auth
    )
    saved = created.get_json()["session_id"]
    assert pay(services, saved, APPROVED, attempt=1).approved
    unpaid = new_session()
    tokenized = client.post(f"/v1/sessions/{saved}/refunds", headers=auth)
    pending = client.post(f"/v1/sessions/{unpaid}/refunds", headers=auth)
    assert tokenized.status_code == 409 and "tokenize" in tokenized.get_json()["detail"]
    assert pending.status_code == 409 and "pending" in pending.get_json()["detail"]
    assert client.post("/v1/sessions/nope/refunds", headers=auth).status_code == 404


def test_another_accounts_key_cannot_see_or_refund_the_session(
    client: FlaskClient,
    paid: Callable[..., str],
    make_project: Callable[..., str],
    make_key: Callable[..., str],
) -> None:
    session_id = paid()
    make_project("rival", "Rival Inc")
    rival = {"Authorization": f"Bearer {make_key('rival')}"}
    assert client.post(f"/v1/sessions/{session_id}/refunds", headers=rival).status_code == 404
    assert client.get(f"/v1/sessions/{session_id}/refunds", headers=rival).status_code == 404


@pytest.mark.parametrize("gateway", ["stripe", "authorizenet", "braintree", "shift4"])
def test_an_authorize_only_payment_is_captured_in_part_then_refunded(
    client: FlaskClient,
    services: Services,
    queued: QueuedJobs,
    auth: dict[str, str],
    paid: Callable[..., str],
    simulator: type[CountingSimulator],
    gateway: str,
) -> None:
    set_project(services, "acme", authorize_only=True)
    session_id = paid(gateway=gateway)
    assert session_of(client, auth, session_id)["status"] == "payment-authorized"
    url = f"/v1/sessions/{session_id}"

    not_yet = client.post(f"{url}/refunds", headers=auth)
    too_much = client.post(f"{url}/capture", json={"amount": "25.01"}, headers=auth)
    assert not_yet.status_code == 409 and "not captured" in not_yet.get_json()["detail"]
    assert too_much.status_code == 422
    assert too_much.get_json()["detail"][0]["type"] == "capture_exceeds_authorized"

    amount = "25.00" if gateway == "shift4" else "20.00"  # Shift4 captures all or nothing
    captured = client.post(f"{url}/capture", json={"amount": amount}, headers=auth)
    assert captured.status_code == 202, captured.get_json()
    assert captured.get_json()["status"] == "pending"
    assert client.post(f"{url}/capture", headers=auth).status_code == 409  # one in flight
    work(services, queued)

    session = session_of(client, auth, session_id)
    assert session["status"] == "payment-authorized"
    assert session["captured_amount"] == amount and session["captured_at"] is not None
    assert client.post(f"{url}/capture", headers=auth).status_code == 409  # already captured
    over = client.post(f"{url}/refunds", json={"amount": amount[:-1] + "1"}, headers=auth)
    assert over.status_code == 422  # more than was captured, though less than authorized
    assert client.post(f"{url}/refunds", headers=auth).get_json()["amount"] == amount
    work(services, queued)
    assert session_of(client, auth, session_id)["amount_refunded"] == amount
    assert [kind for kind, _, _ in simulator.sent] == ["capture", "refund"]


def test_shift4_cannot_capture_part_of_an_authorization(
    client: FlaskClient, services: Services, auth: dict[str, str], paid: Callable[..., str]
) -> None:
    set_project(services, "acme", authorize_only=True)
    session_id = paid(gateway="shift4")
    response = client.post(
        f"/v1/sessions/{session_id}/capture", json={"amount": "10.00"}, headers=auth
    )
    assert response.status_code == 422
    assert response.get_json()["detail"][0]["type"] == "partial_capture_unsupported"


def test_a_voided_authorization_can_be_neither_captured_nor_refunded(
    client: FlaskClient,
    services: Services,
    queued: QueuedJobs,
    auth: dict[str, str],
    paid: Callable[..., str],
    simulator: type[CountingSimulator],
) -> None:
    set_project(services, "acme", authorize_only=True)
    session_id = paid()
    url = f"/v1/sessions/{session_id}"
    voided = client.post(f"{url}/void", headers=auth)
    assert voided.status_code == 202 and voided.get_json()["kind"] == "void"
    work(services, queued)

    session = session_of(client, auth, session_id)
    assert session["voided_at"] is not None and session["status"] == "payment-authorized"
    assert client.post(f"{url}/capture", headers=auth).status_code == 409
    assert client.post(f"{url}/refunds", headers=auth).status_code == 409
    assert client.post(f"{url}/void", headers=auth).status_code == 409
    assert simulator.sent == [("void", f"pd-{session_id}-void-1", None)]


def test_a_captured_stripe_payment_is_not_voidable_but_an_unsettled_authorizenet_one_is(
    client: FlaskClient,
    services: Services,
    queued: QueuedJobs,
    auth: dict[str, str],
    paid: Callable[..., str],
) -> None:
    stripe_paid = paid()
    refused = client.post(f"/v1/sessions/{stripe_paid}/void", headers=auth)
    assert refused.status_code == 409 and "refund it instead" in refused.get_json()["detail"]

    anet_paid = paid(gateway="authorizenet")
    assert client.post(f"/v1/sessions/{anet_paid}/void", headers=auth).status_code == 202
    work(services, queued)
    assert session_of(client, auth, anet_paid)["voided_at"] is not None


def test_ten_identical_refund_requests_at_once_with_one_key_make_one_gateway_refund(
    app: Flask,
    services: Services,
    queued: QueuedJobs,
    auth: dict[str, str],
    paid: Callable[..., str],
    simulator: type[CountingSimulator],
) -> None:
    session_id = paid()
    headers = {**auth, "Idempotency-Key": "refund-order-1042"}

    def post(_: int) -> tuple[int, dict[str, Any]]:
        response = app.test_client().post(
            f"/v1/sessions/{session_id}/refunds", json={"amount": "10.00"}, headers=headers
        )
        return response.status_code, response.get_json()

    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(pool.map(post, range(10)))
    work(services, queued)

    created = [body for status, body in answers if status == 201]
    assert {status for status, _ in answers} <= {201, 409}
    assert len({body["refund_id"] for body in created}) == 1  # replays of the one refund
    assert simulator.sent == [("refund", f"pd-{session_id}-refund-1", 1000)]
    replay = app.test_client().post(
        f"/v1/sessions/{session_id}/refunds", json={"amount": "10.00"}, headers=headers
    )
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.get_json()["refund_id"] == created[0]["refund_id"]
    assert session_of(app.test_client(), auth, session_id)["amount_refunded"] == "10.00"


def test_two_keys_asking_for_more_than_was_captured_the_second_is_refused(
    app: Flask,
    services: Services,
    queued: QueuedJobs,
    auth: dict[str, str],
    paid: Callable[..., str],
    simulator: type[CountingSimulator],
) -> None:
    session_id = paid()

    def post(key: str) -> int:
        response = app.test_client().post(
            f"/v1/sessions/{session_id}/refunds",
            json={"amount": "15.00"},
            headers={**auth, "Idempotency-Key": key},
        )
        return response.status_code

    with ThreadPoolExecutor(max_workers=2) as pool:
        statuses = sorted(pool.map(post, ["first", "second"]))
    work(services, queued)

    assert statuses == [201, 422]
    assert [amount for _, _, amount in simulator.sent] == [1500]
    assert session_of(app.test_client(), auth, session_id)["amount_refunded"] == "15.00"


def test_a_refund_whose_answer_is_lost_is_looked_up_never_sent_again(
    client: FlaskClient,
    services: Services,
    queued: QueuedJobs,
    clock: Clock,
    auth: dict[str, str],
    paid: Callable[..., str],
    simulator: type[CountingSimulator],
) -> None:
    session_id = paid()
    simulator.lose_answers = True
    simulator.lookups_fail = 1  # the look-up right after the timeout cannot say either
    client.post(f"/v1/sessions/{session_id}/refunds", json={"amount": "5.00"}, headers=auth)
    work(services, queued)
    [refund] = session_of(client, auth, session_id)["refunds"]
    assert refund["status"] == "pending"

    assert reconcile_operations(services) == 0  # not due before its pause
    clock.advance(minutes=2)
    assert reconcile_operations(services) == 1

    session = session_of(client, auth, session_id)
    assert session["refunds"][0]["status"] == "succeeded"
    assert session["amount_refunded"] == "5.00"
    assert len(simulator.sent) == 1


def test_a_refund_the_gateway_never_confirms_stays_pending_and_is_looked_up_no_more(
    client: FlaskClient,
    services: Services,
    queued: QueuedJobs,
    clock: Clock,
    auth: dict[str, str],
    hook_secret: str,
    opt_in: Callable[..., None],
    paid: Callable[..., str],
    simulator: type[CountingSimulator],
    caplog: pytest.LogCaptureFixture,
) -> None:
    opt_in("refund-succeeded", "refund-failed")
    session_id = paid()
    simulator.lose_answers = True
    simulator.lookups_fail = 10 * MAX_LOOK_UPS  # the gateway never says
    client.post(f"/v1/sessions/{session_id}/refunds", json={"amount": "5.00"}, headers=auth)
    work(services, queued)

    pauses = []
    for _ in range(MAX_LOOK_UPS):
        with services.db.transaction() as tx:
            [operation] = tx.scalars(select(MoneyOperation)).all()
            assert operation.next_check_at is not None
            pauses.append(operation.next_check_at - clock())
        clock.advance(seconds=pauses[-1].total_seconds())
        assert reconcile_operations(services) == 1
    clock.advance(days=30)

    assert reconcile_operations(services) == 0  # nobody asks any more
    # the first pause follows the look-up right after the timeout, the others each sweep's
    assert pauses == [next_pause(0), *(next_pause(checks) for checks in range(MAX_LOOK_UPS - 1))]
    assert sum(pauses, timedelta()) > timedelta(hours=23)
    session = session_of(client, auth, session_id)
    [refund] = session["refunds"]
    assert refund["status"] == "pending"  # it may have moved money: never `failed`
    assert refund["error"]["code"] == "outcome_unconfirmed"
    assert "gateway's console" in refund["error"]["message"]
    assert session["amount_refunded"] == "0.00"
    too_much = client.post(
        f"/v1/sessions/{session_id}/refunds", json={"amount": "20.01"}, headers=auth
    )
    assert too_much.status_code == 422  # its 5.00 stays reserved
    assert len(simulator.sent) == 1 and hooks(services, session_id) == []
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING and "look-ups" in r.msg]
    assert session_id in warning.getMessage() and refund["refund_id"] in warning.getMessage()
    assert getattr(warning, "session_id", None) == session_id


def test_a_lost_refund_the_gateway_never_got_fails_and_gives_its_amount_back(
    client: FlaskClient,
    services: Services,
    queued: QueuedJobs,
    clock: Clock,
    auth: dict[str, str],
    paid: Callable[..., str],
    simulator: type[CountingSimulator],
) -> None:
    session_id = paid()
    response = client.post(f"/v1/sessions/{session_id}/refunds", headers=auth)
    assert response.status_code == 201
    queued.operations.clear()  # the queue lost the job; the runner never sent it
    clock.advance(minutes=5)

    assert reconcile_operations(services) == 1  # no runner took it: the sweep runs it, once
    assert len(simulator.sent) == 1
    assert session_of(client, auth, session_id)["refunds"][0]["status"] == "succeeded"


def test_merchants_who_opted_in_hear_of_refunds_captures_and_voids(
    client: FlaskClient,
    services: Services,
    queued: QueuedJobs,
    auth: dict[str, str],
    hook_secret: str,
    opt_in: Callable[..., None],
    paid: Callable[..., str],
) -> None:
    charged = paid()
    client.post(f"/v1/sessions/{charged}/refunds", json={"amount": "10.00"}, headers=auth)
    work(services, queued)
    assert hooks(services, charged) == []  # not opted in

    opt_in("refund-succeeded", "payment-captured", "payment-voided")
    client.post(f"/v1/sessions/{charged}/refunds", json={"amount": "10.00"}, headers=auth)
    set_project(services, "acme", authorize_only=True)
    held, released = paid(), paid()
    client.post(f"/v1/sessions/{held}/capture", headers=auth)
    client.post(f"/v1/sessions/{released}/void", headers=auth)
    work(services, queued)

    [(kind, refunded)] = hooks(services, charged)
    assert kind == "refund-succeeded" and refunded["event"] == "refund-succeeded"
    assert refunded["refund"]["amount"] == "10.00" and refunded["amount_refunded"] == "20.00"
    assert refunded["status"] == "payment-success"
    assert [kind for kind, _ in hooks(services, held)][-1] == "payment-captured"
    assert [kind for kind, _ in hooks(services, released)][-1] == "payment-voided"


def test_a_payment_still_unsettled_when_the_refund_is_sent_fails_saying_void_and_gives_it_back(
    client: FlaskClient,
    services: Services,
    queued: QueuedJobs,
    auth: dict[str, str],
    hook_secret: str,
    opt_in: Callable[..., None],
    paid: Callable[..., str],
    simulator: type[CountingSimulator],
) -> None:
    opt_in("refund-failed")
    session_id = paid(gateway="authorizenet")
    simulator.unsettled = True  # the request's check said settled (the backstop for a race)
    client.post(f"/v1/sessions/{session_id}/refunds", headers=auth)
    work(services, queued)

    session = session_of(client, auth, session_id)
    [refund] = session["refunds"]
    assert refund["status"] == "failed" and refund["error"]["code"] == "void_required"
    assert "void it instead" in refund["error"]["message"]
    assert session["amount_refunded"] == "0.00"
    [(kind, body)] = hooks(services, session_id)
    assert kind == "refund-failed" and body["refund"]["error"]["code"] == "void_required"
    voided = client.post(f"/v1/sessions/{session_id}/void", headers=auth)  # as it says
    assert voided.status_code == 202
    work(services, queued)
    assert session_of(client, auth, session_id)["voided_at"] is not None


def hooks(services: Services, session_id: str) -> list[tuple[str, dict[str, Any]]]:
    """The session's after-payment webhook events, oldest first."""
    after = ("refund-succeeded", "refund-failed", "payment-captured", "payment-voided")
    with services.db.transaction() as tx:
        rows = tx.scalars(
            select(WebhookEvent)
            .where(WebhookEvent.session_id == session_id, WebhookEvent.type.in_(after))
            .order_by(WebhookEvent.created_at)
        ).all()
        return [(row.type, json.loads(row.payload)) for row in rows]
