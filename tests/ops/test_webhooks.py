"""Merchant webhooks: signed, from a transactional outbox, retried with backoff, replayable."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
from collections.abc import Callable
from datetime import timedelta

import pytest
from flask.testing import FlaskClient
from pytest_httpserver import HTTPServer
from sqlalchemy import select
from werkzeug import Request, Response

from gateways.base import Card
from ivr.wiring import build_services
from payments.accounts import get_project_by_slug
from payments.attempts import pay
from payments.breaker import PAUSED_EVENT
from payments.delivery import RETRY_WINDOW, deliver_due
from payments.model import Status
from payments.outbox import record_project_event
from payments.services import Services
from payments.sessions import load_session, transition
from payments.store import Database, WebhookDelivery, WebhookEvent
from tests.conftest import set_project, tuned
from tests.keepalive import keep_alive_server

APPROVED = Card(number="4242424242424242", exp_month=12, exp_year=2030, cvc="123")


def verify(secret: str, header: str, body: bytes, now: float, tolerance: int = 300) -> bool:
    """The receiver's side, written from the documentation alone (not our signing code)."""
    fields = dict(part.split("=", 1) for part in header.split(","))
    signed = fields["t"].encode() + b"." + body
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields["v1"]) and abs(now - int(fields["t"])) <= tolerance


def checking_receiver(server: HTTPServer, secret: str, now: float) -> list[dict[str, object]]:
    """Accept only correctly signed POSTs; returns the list the accepted bodies land in."""
    accepted: list[dict[str, object]] = []

    def handle(request: Request) -> Response:
        body = request.get_data()
        if not verify(secret, request.headers.get("Maven-Signature", "t=0,v1=x"), body, now):
            return Response("bad signature", status=400)
        accepted.append(json.loads(body))
        return Response("ok")

    server.expect_request("/hooks", method="POST").respond_with_handler(handle)
    return accepted


def test_a_payment_result_reaches_the_merchant_signed_and_verifiable(
    services: Services, hook_secret: str, receiver: HTTPServer, new_session: Callable[..., str]
) -> None:
    accepted = checking_receiver(receiver, hook_secret, services.clock().timestamp())
    session_id = new_session(memory="agent context")
    pay(services, session_id, APPROVED)

    assert deliver_due(services) == 1
    assert len(accepted) == 1
    body = accepted[0]
    assert str(body["event_id"]).startswith("evt_")
    assert body["session_id"] == session_id
    assert body["status"] == "payment-success"
    assert body["source"] == "voice"
    assert body["caller"] == "+14155550100"
    assert body["amount"] == 25.0  # a JSON number in the webhook, as Maven sends it
    assert (body["currency"], body["project_slug"], body["language"]) == ("USD", "acme", "en-US")
    assert body["card_last4"] == "4242"
    assert isinstance(body["processor"], dict)
    assert (body["processor"]["card_brand"], body["processor"]["card_last4"]) == ("visa", "4242")
    assert body["memory"] == "agent context"
    assert "4242424242424242" not in json.dumps(body)


def test_the_receivers_check_rejects_a_changed_body_or_another_secret(
    services: Services, hook_secret: str, receiver: HTTPServer, new_session: Callable[..., str]
) -> None:
    pay(services, new_session(), APPROVED)
    deliver_due(services)
    request, _ = receiver.log[0]
    body, header = request.get_data(), request.headers["Maven-Signature"]
    now = services.clock().timestamp()
    assert verify(hook_secret, header, body, now)
    assert not verify(hook_secret, header, body.replace(b'"amount":25.0', b'"amount":2500.0'), now)
    assert not verify("whsec_other", header, body, now)
    assert not verify(hook_secret, header, body, now + 3600)  # a replayed old request


def test_failed_sends_are_retried_with_growing_delays_after_500s_and_timeouts(
    services: Services, hook_secret: str, receiver: HTTPServer, new_session: Callable[..., str]
) -> None:
    services = tuned(services, webhook_timeout_seconds=0.3)
    answers = iter(["500", "timeout", "500", "timeout", "ok"])

    def flaky(request: Request) -> Response:
        answer = next(answers)
        if answer == "timeout":
            time.sleep(0.8)
        return Response(answer, status=500 if answer == "500" else 200)

    receiver.expect_request("/hooks", method="POST").respond_with_handler(flaky)
    pay(services, new_session(), APPROVED)

    delays = []
    for _ in range(4):
        assert deliver_due(services) == 1
        with services.db.transaction() as tx:
            event = tx.scalars(select(WebhookEvent)).one()
            assert not event.delivered and event.next_attempt_at is not None
            delays.append(event.next_attempt_at - services.clock())
        assert deliver_due(services) == 0  # not due again before its time
        services.clock.advance(seconds=delays[-1].total_seconds())  # type: ignore[attr-defined]
    assert deliver_due(services) == 1

    assert all(later > earlier for earlier, later in itertools.pairwise(delays))
    with services.db.transaction() as tx:
        attempts = tx.scalars(select(WebhookDelivery).order_by(WebhookDelivery.attempt)).all()
        event = tx.scalars(select(WebhookEvent)).one()
        assert event.delivered and event.next_attempt_at is None
    assert [a.status_code for a in attempts] == [500, None, 500, None, 200]
    assert [a.error for a in attempts] == ["HTTP 500", "timeout", "HTTP 500", "timeout", None]
    assert all(a.latency_ms is not None for a in attempts)
    assert attempts[1].latency_ms is not None and attempts[1].latency_ms >= 250


def test_delivery_gives_up_three_days_after_the_event(
    services: Services, hook_secret: str, receiver: HTTPServer, new_session: Callable[..., str]
) -> None:
    receiver.expect_request("/hooks", method="POST").respond_with_data("down", status=503)
    pay(services, new_session(), APPROVED)
    start = services.clock()
    sends = 0
    while deliver_due(services):
        sends += 1
        with services.db.transaction() as tx:
            due = tx.scalars(select(WebhookEvent)).one().next_attempt_at
        if due is None:
            break
        services.clock.now = due  # type: ignore[attr-defined]
    assert services.clock() - start <= RETRY_WINDOW
    assert 10 < sends < 40
    with services.db.transaction() as tx:
        event = tx.scalars(select(WebhookEvent)).one()
        assert not event.delivered and event.next_attempt_at is None


def test_an_event_committed_before_a_crash_is_delivered_after_a_restart(
    services: Services,
    hook_secret: str,
    receiver: HTTPServer,
    new_session: Callable[..., str],
    client: FlaskClient,
    merchant: dict[str, str],
    opt_in: Callable[..., None],
) -> None:
    accepted = checking_receiver(receiver, hook_secret, services.clock().timestamp())
    opt_in("cancelled")
    session_id = new_session()
    cancelled = client.post(
        f"/v1/sessions/{session_id}/cancel", headers={"Authorization": merchant["test"]}
    )
    assert cancelled.status_code == 204
    services.db.dispose()  # the process dies before anything is sent

    restarted = build_services(
        services.settings,
        db=Database(services.settings.database_url),
        clock=services.clock,
    )
    try:
        assert deliver_due(restarted) == 1
    finally:
        restarted.db.dispose()
    assert [(b["session_id"], b["status"]) for b in accepted] == [(session_id, "cancelled")]


def test_an_event_rolled_back_with_its_status_change_is_never_sent(
    services: Services, hook_secret: str, new_session: Callable[..., str]
) -> None:
    session_id = new_session()
    with pytest.raises(RuntimeError), services.db.transaction() as tx:
        session = load_session(tx, session_id, now=services.clock(), for_update=True)
        transition(tx, session, Status.PAYMENT_FAILED, cause="test", now=services.clock())
        raise RuntimeError("the transaction fails after the change")
    with services.db.transaction() as tx:
        assert tx.scalars(select(WebhookEvent)).all() == []
        assert load_session(tx, session_id, now=services.clock()).status == "pending"


def test_expired_cancelled_and_abandoned_are_sent_only_after_opting_in(
    services: Services,
    hook_secret: str,
    new_session: Callable[..., str],
    client: FlaskClient,
    merchant: dict[str, str],
    opt_in: Callable[..., None],
) -> None:
    auth = {"Authorization": merchant["test"]}
    client.post(f"/v1/sessions/{new_session()}/cancel", headers=auth)
    opt_in("expired")
    client.post(f"/v1/sessions/{new_session()}/cancel", headers=auth)
    expiring = new_session()
    services.clock.advance(hours=1)  # type: ignore[attr-defined]
    assert client.get(f"/v1/sessions/{expiring}", headers=auth).get_json()["status"] == "expired"
    with services.db.transaction() as tx:
        events = tx.scalars(select(WebhookEvent)).all()
    assert [(e.session_id, e.type) for e in events] == [(expiring, "expired")]


def test_delivery_attempts_are_listed_and_a_replay_sends_the_same_event_again(
    services: Services,
    hook_secret: str,
    receiver: HTTPServer,
    new_session: Callable[..., str],
    client: FlaskClient,
    merchant: dict[str, str],
) -> None:
    answers = iter([500, 200])
    receiver.expect_request("/hooks", method="POST").respond_with_handler(
        lambda request: Response("", status=next(answers))
    )
    session_id = new_session()
    pay(services, session_id, APPROVED)
    deliver_due(services)
    auth = {"Authorization": merchant["test"]}

    listed = client.get(f"/v1/webhook-deliveries?session_id={session_id}", headers=auth)
    assert listed.status_code == 200
    [first] = listed.get_json()["data"]
    assert first["status_code"] == 500 and first["error"] == "HTTP 500"
    assert first["event_type"] == "payment-success" and first["attempt"] == 1
    assert first["event_delivered"] is False and first["next_attempt_at"] is not None

    replayed = client.post(f"/v1/webhook-deliveries/{first['id']}/replay", headers=auth)
    assert replayed.status_code == 201
    again = replayed.get_json()
    assert again["status_code"] == 200 and again["attempt"] == 2
    assert again["event_id"] == first["event_id"] and again["event_delivered"] is True
    bodies = [json.loads(request.get_data()) for request, _ in receiver.log]
    assert [b["event_id"] for b in bodies] == [first["event_id"]] * 2
    listed = client.get(f"/v1/webhook-deliveries?session_id={session_id}", headers=auth)
    assert [d["status_code"] for d in listed.get_json()["data"]] == [500, 200]
    assert deliver_due(services) == 0  # delivered: no retry left behind


def test_deliveries_outside_the_keys_account_or_mode_are_not_found(
    services: Services,
    hook_secret: str,
    receiver: HTTPServer,
    new_session: Callable[..., str],
    client: FlaskClient,
    merchant: dict[str, str],
    make_project: Callable[..., str],
    make_key: Callable[..., str],
) -> None:
    receiver.expect_request("/hooks", method="POST").respond_with_data("ok")
    session_id = new_session()
    pay(services, session_id, APPROVED)
    deliver_due(services)
    with services.db.transaction() as tx:
        delivery_id = tx.scalars(select(WebhookDelivery.id)).one()
    make_project("rival")
    for auth in (f"Bearer {make_key('rival')}", merchant["live"]):
        headers = {"Authorization": auth}
        listed = client.get(f"/v1/webhook-deliveries?session_id={session_id}", headers=headers)
        assert listed.status_code == 404
        replay = client.post(f"/v1/webhook-deliveries/{delivery_id}/replay", headers=headers)
        assert replay.status_code == 404
        assert replay.get_json() == {"detail": "Delivery not found"}
    assert len(receiver.log) == 1


def test_an_event_about_the_project_is_listed_by_project_and_replayed_in_its_mode_only(
    services: Services,
    hook_secret: str,
    receiver: HTTPServer,
    client: FlaskClient,
    merchant: dict[str, str],
    make_project: Callable[..., str],
    make_key: Callable[..., str],
) -> None:
    answers = iter([503, 200])
    receiver.expect_request("/hooks", method="POST").respond_with_handler(
        lambda request: Response("", status=next(answers))
    )
    with services.db.transaction() as tx:  # as the widget's decline breaker tells the merchant
        project = get_project_by_slug(tx, "acme")
        record_project_event(
            tx, project, "test", PAUSED_EVENT, services.clock(), {"reason": "decline_rate"}
        )
    deliver_due(services)
    auth = {"Authorization": merchant["test"]}

    listed = client.get("/v1/projects/acme/webhook-deliveries", headers=auth)
    assert listed.status_code == 200
    [first] = listed.get_json()["data"]
    assert (first["event_type"], first["session_id"], first["status_code"]) == (
        PAUSED_EVENT,
        None,
        503,
    )
    replayed = client.post(f"/v1/webhook-deliveries/{first['id']}/replay", headers=auth)
    assert replayed.status_code == 201
    assert (replayed.get_json()["status_code"], replayed.get_json()["event_delivered"]) == (
        200,
        True,
    )
    by_id = client.get(f"/v1/projects/{project.id}/webhook-deliveries", headers=auth)
    assert [d["status_code"] for d in by_id.get_json()["data"]] == [503, 200]

    # Another mode sees none of it; another account cannot reach the project or the delivery.
    live = {"Authorization": merchant["live"]}
    assert client.get("/v1/projects/acme/webhook-deliveries", headers=live).get_json() == {
        "data": []
    }
    make_project("rival")
    rival = {"Authorization": f"Bearer {make_key('rival')}"}
    for headers in (live, rival):
        replay = client.post(f"/v1/webhook-deliveries/{first['id']}/replay", headers=headers)
        assert replay.status_code == 404
    assert client.get("/v1/projects/acme/webhook-deliveries", headers=rival).status_code == 404
    assert len(receiver.log) == 2


def test_a_chat_session_event_says_source_chat_with_no_caller(
    services: Services,
    hook_secret: str,
    receiver: HTTPServer,
    client: FlaskClient,
    merchant: dict[str, str],
) -> None:
    accepted = checking_receiver(receiver, hook_secret, services.clock().timestamp())
    created = client.post(
        "/v1/widget-sessions",
        json={"project": "acme", "amount_cents": 1250, "gateway": "braintree"},
        headers={"Authorization": merchant["test"]},
    )
    pay(services, created.get_json()["session_id"], APPROVED)
    deliver_due(services)
    assert [(b["source"], b["caller"], b["status"]) for b in accepted] == [
        ("chat", None, "payment-success")
    ]


def test_without_a_webhook_url_no_event_is_written(
    services: Services, new_session: Callable[..., str]
) -> None:
    pay(services, new_session(), APPROVED)
    services.clock.advance(minutes=1)  # type: ignore[attr-defined]
    assert deliver_due(services) == 0
    with services.db.transaction() as tx:
        assert tx.scalars(select(WebhookEvent)).all() == []


def test_a_delivery_the_worker_claimed_but_never_sent_is_sent_after_the_lease(
    services: Services, hook_secret: str, receiver: HTTPServer, new_session: Callable[..., str]
) -> None:
    receiver.expect_request("/hooks", method="POST").respond_with_data("ok")
    pay(services, new_session(), APPROVED)
    with services.db.transaction() as tx:  # a worker claims the event, then dies
        event = tx.scalars(select(WebhookEvent)).one()
        event.next_attempt_at = services.clock() + timedelta(minutes=2)
    assert deliver_due(services) == 0
    services.clock.advance(minutes=2)  # type: ignore[attr-defined]
    assert deliver_due(services) == 1
    assert len(receiver.log) == 1


def test_a_live_event_is_kept_but_never_sent_over_plain_http(
    services: Services,
    client: FlaskClient,
    live_merchant: dict[str, str],
    hook_secret: str,
    receiver: HTTPServer,
    new_session: Callable[..., str],
    opt_in: Callable[..., None],
) -> None:
    """The receiver here is http on loopback: test events go there, live ones wait for https."""
    merchant = live_merchant
    opt_in("cancelled")
    accepted = checking_receiver(receiver, hook_secret, services.clock().timestamp())
    for mode in ("live", "test"):
        session_id = new_session(mode)
        cancelled = client.post(
            f"/v1/sessions/{session_id}/cancel", headers={"Authorization": merchant[mode]}
        )
        assert cancelled.status_code == 204

    assert deliver_due(services) == 2
    assert [body["environment"] for body in accepted] == ["test"]
    with services.db.transaction() as tx:
        live = tx.scalars(select(WebhookEvent).where(WebhookEvent.delivered.is_(False))).one()
        [attempt] = tx.scalars(select(WebhookDelivery).where(WebhookDelivery.event_id == live.id))
        assert attempt.status_code is None and "https only" in (attempt.error or "")
        assert live.next_attempt_at is not None  # retried, so an https URL set later gets it


def test_events_to_one_receiver_reuse_a_kept_alive_connection(
    services: Services, merchant: dict[str, str], new_session: Callable[..., str]
) -> None:
    with keep_alive_server(lambda path: (200, {"received": True})) as server:
        set_project(services, "acme", webhook_url=server.url + "/hooks")
        for _ in range(3):
            pay(services, new_session(), APPROVED)
            assert deliver_due(services) == 1

    assert len(server.ports) == 3
    assert len(set(server.ports)) == 1, f"one connection, not one per event: {server.ports}"
